//! `report.html`: one self-contained page per run (inline CSS and SVG, no
//! script, nothing fetched) for a person to read: verdict and counts, failure
//! causes, failures with their output, flaky tests, a per-worker timeline and
//! a histogram of durations.
//!
//! Everything from outside (ids, outputs, messages, worker names) goes through
//! [`markup`]'s escaping; every list and chart is capped, and the page says so.

mod batches;
mod durations;
mod markup;
mod page;
mod timeline;

pub use page::render;
