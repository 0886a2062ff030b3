//! Sets up `tracing`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Default filter: runbase at `info`; the Delta libraries log every snapshot and scan at
/// `info`, which drowns the server's own lines, so they are held to `warn` — and their
/// statistics writer warns on every write of a `bytea` column that it keeps no statistics
/// for it, which is not news to an operator, so it is held to `error`.
pub const DEFAULT_FILTER: &str = "info,buoyant_kernel=warn,deltalake_core=warn,deltalake=warn,\
                                  deltalake_core::writer::stats=error";

/// Installs the global subscriber, filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]),
/// writing to stderr.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
