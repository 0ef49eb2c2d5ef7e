//! Structured JSON logs (one object a line), level from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// `to_stderr`: the CLI keeps stdout for its own output; Lambda reads stdout.
pub fn init(to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter);
    let _ = if to_stderr {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.with_writer(std::io::stdout).try_init()
    };
}
