//! Nothing to see here: the end-to-end tests live in `it/`, one binary with a
//! module per area and a `fixtures` module that starts real fleets.
