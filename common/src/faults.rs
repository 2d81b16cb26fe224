//! Deliberate failures for the end-to-end tests, which must show that a panic
//! in one job or one run's reports costs that job or those reports only.
//!
//! Debug builds only: `TESTFLEET_FAULT_PANIC=<point>:<key>` makes the code at
//! `point` panic when it handles `key` (a test id for `job`, a suite name for
//! `report`). Release builds compile the check away.

/// Panics if the environment asks for a panic at `point` for `key`.
pub fn panic_if_asked(point: &str, key: &str) {
    if cfg!(debug_assertions) && asked(point, key) {
        panic!("deliberate panic at {point} for {key} (TESTFLEET_FAULT_PANIC)");
    }
}

fn asked(point: &str, key: &str) -> bool {
    std::env::var("TESTFLEET_FAULT_PANIC")
        .ok()
        .and_then(|v| v.split_once(':').map(|(p, k)| p == point && k == key))
        .unwrap_or(false)
}
