//! What the three binaries' command lines share: the `--config` and `--broker`
//! flags, flags as configuration overrides, exit codes, and the way a service
//! binary starts, runs and maps its errors to an exit code.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, ConfigError, Override, RawConfig, Value};
use crate::shutdown::Shutdown;

/// Exit code for usage and configuration errors (also clap's own).
pub const USAGE: u8 = 2;
/// Exit code when the broker, the engine or the state on disk cannot be used.
pub const INFRA: u8 = 5;

/// Flags every binary takes.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Configuration file (default: ./testfleet.toml if present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Broker URL, e.g. amqp://user:pass@host:5672/%2f?heartbeat=10.
    #[arg(long)]
    pub broker: Option<String>,
}

impl CommonArgs {
    /// Loads the configuration with `flags` (and `--broker`) as the top layer,
    /// and checks its broker section, which every binary uses.
    pub fn load(&self, flags: Overrides) -> Result<RawConfig, ConfigError> {
        let flags = flags.set("broker.url", self.broker.clone());
        let raw = config::load(self.config.as_deref(), flags.0)?;
        raw.broker.validate()?;
        Ok(raw)
    }
}

/// Command-line flags that were given, as configuration keys.
#[derive(Debug, Default)]
pub struct Overrides(Vec<Override>);

impl Overrides {
    /// Adds `key` when the flag was given.
    pub fn set(mut self, key: &'static str, value: Option<impl Into<Value>>) -> Self {
        if let Some(value) = value {
            self.0.push((key, value.into()));
        }
        self
    }
}

/// Prints `program: error` to stderr and returns `code`.
pub fn fail(program: &str, code: u8, error: impl Display) -> ExitCode {
    eprintln!("{program}: {error}");
    ExitCode::from(code)
}

/// A service binary's body: logging, settings (a usage error if they are bad),
/// shutdown on Ctrl-C and SIGTERM, then the service (an infrastructure error if
/// it fails).
pub async fn serve<S, E, F>(
    program: &str,
    settings: Result<S, ConfigError>,
    service: impl FnOnce(S, Shutdown) -> F,
) -> ExitCode
where
    E: Display,
    F: Future<Output = Result<(), E>>,
{
    crate::logging::init();
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => return fail(program, USAGE, error),
    };
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    match service(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(program, INFRA, error),
    }
}
