//! Logging setup: `tracing` with an `RUST_LOG`-style filter, plain or JSON lines.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{
    Error, Result,
    cli::{LogArgs, LogFormat},
};

/// Installs the global tracing subscriber and logs the component's name and version.
///
/// Call once, first thing in `main`.
pub fn init(args: &LogArgs, component: &str, version: &str) -> Result<()> {
    let filter = EnvFilter::try_new(&args.log_filter)
        .map_err(|e| Error::Telemetry(format!("bad log filter {:?}: {e}", args.log_filter)))?;
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match args.log_format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_target(true).compact())
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    installed.map_err(|e| Error::Telemetry(e.to_string()))?;
    tracing::info!(
        component,
        version,
        log_format = ?args.log_format,
        "starting"
    );
    Ok(())
}
