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

/// Replaces the default panic hook, which prints the panic's message: that may quote a
/// request's text (patient data). This one logs where it happened, inside the invocation's span
/// (so with its request id). Each function's `main` installs it; tests keep the default.
pub fn log_panics_without_their_message() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic (its message is not logged)");
    }));
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

/// The parts of a cold start and what each cost, logged once by `cold_start_complete`:
/// the benchmark and the CloudWatch query in the README read that line.
static INIT_STEPS: std::sync::Mutex<Vec<(&'static str, f64)>> = std::sync::Mutex::new(Vec::new());

/// Adds `elapsed` to the cold-start step `step` (config, secrets, pool, aws_sdk).
pub fn record_init_step(step: &'static str, elapsed: std::time::Duration) {
    if let Ok(mut steps) = INIT_STEPS.lock() {
        steps.push((step, elapsed.as_secs_f64() * 1000.0));
    }
}

/// Logs `{"message":"cold start complete","init_ms":..,"steps":{..}}` for this process.
pub fn cold_start_complete(started: std::time::Instant) {
    let steps: serde_json::Map<String, serde_json::Value> = INIT_STEPS
        .lock()
        .map(|steps| {
            let mut totals: Vec<(&str, f64)> = Vec::new();
            for (name, ms) in steps.iter() {
                match totals.iter_mut().find(|(n, _)| n == name) {
                    Some((_, total)) => *total += ms,
                    None => totals.push((name, *ms)),
                }
            }
            totals
                .into_iter()
                .map(|(n, ms)| (format!("{n}_ms"), ms.into()))
                .collect()
        })
        .unwrap_or_default();
    tracing::info!(
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        steps = %serde_json::Value::Object(steps),
        "cold start complete"
    );
}
