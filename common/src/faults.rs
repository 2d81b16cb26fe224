//! Deliberate failures for the end-to-end tests, which must show that a panic
//! in one job or one run's reports costs that job or those reports only.
//!
//! Debug builds only: `TESTFLEET_FAULT_PANIC=<point>:<key>` makes the code at
//! `point` panic when it handles `key` (a test id for `job`, a suite name for
//! `report`), and `TESTFLEET_FAULT_EXIT=<point>:<n>` makes the process exit at
//! once, as a kill would stop it, the `n`-th time it passes `point` (the
//! journal's `journal-commit`, between a record on disk and its ack), and
//! `TESTFLEET_FAULT_SLOW=<point>:<ms>` makes the code at `point` take that
//! much longer (a slow disk under the journal's sync).
//! Release builds compile the checks away.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Sleeps (a blocking sleep: call it on a blocking thread) if the
/// environment asks `point` to be slow.
pub fn delay_if_asked(point: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let delay = std::env::var("TESTFLEET_FAULT_SLOW").ok().and_then(|v| {
        v.split_once(':')
            .filter(|(p, _)| *p == point)
            .and_then(|(_, ms)| ms.parse::<u64>().ok())
    });
    if let Some(ms) = delay {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Exits the process at once (no drain, nothing acked) if the environment
/// asks for it at this pass of `point`.
pub fn exit_if_asked(point: &str) {
    static PASSES: AtomicU64 = AtomicU64::new(0);
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(nth) = std::env::var("TESTFLEET_FAULT_EXIT").ok().and_then(|v| {
        v.split_once(':')
            .filter(|(p, _)| *p == point)
            .and_then(|(_, n)| n.parse::<u64>().ok())
    }) else {
        return;
    };
    if PASSES.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("deliberate exit at {point}, pass {nth} (TESTFLEET_FAULT_EXIT)");
        std::process::exit(137);
    }
}
