//! JSON log lines. The Lambda runtime opens a span per invocation carrying `requestId`, and
//! every line inside it carries that span, so each line names its request.
//! What may be logged: ids, statuses, timings. Never secrets, tokens, passwords or patient fields.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second call (tests build several handlers in one process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .try_init();
}

/// Ends a cold start that cannot succeed with one log line naming the problem, not a panic trace.
pub fn exit_on_init_error<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            tracing::error!(error = %e, "cold start failed");
            eprintln!("cold start failed: {e}");
            std::process::exit(1);
        }
    }
}
