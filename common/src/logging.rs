//! The tracing subscriber every binary installs: `RUST_LOG` filters, `info` by default.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr so stdout stays for results.
pub fn init() {
    // lapin logs a spurious ERROR ("invalid channel state: Closing") on every clean
    // connection close; every lapin error that matters reaches our code as a
    // `Result` and is logged there with context. `RUST_LOG=lapin=debug` shows it.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
