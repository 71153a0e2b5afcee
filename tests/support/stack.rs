//! Where the local services are: the addresses scripts/test exports, else the stack
//! scripts/dev starts.

/// The settings of the stack scripts/dev starts (scripts/lib/stack.sh, `stack_up dev 9100`).
const DEV_STACK: &[(&str, &str)] = &[
    (
        "CAREVAULT_TEST_ADMIN_URL",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ),
    ("AWS_ACCESS_KEY_ID", "carevault-local"),
    ("AWS_SECRET_ACCESS_KEY", "carevault-local-secret"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9101"),
    ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9102"),
    ("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:9102"),
    ("S3_BUCKET", "carevault-local"),
    ("SMTP_PORT", "9103"),
    (
        "SMTP_SINK_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/stack/dev/mail"),
    ),
];

static STACK_DEFAULTS: std::sync::Once = std::sync::Once::new();

/// Fills in scripts/dev's stack for every variable scripts/test did not export. Runs before any
/// test reads the environment (every entry point of the harness calls it first).
pub(crate) fn use_dev_stack_defaults() {
    STACK_DEFAULTS.call_once(|| {
        for (name, value) in DEV_STACK {
            if std::env::var_os(name).is_none() {
                std::env::set_var(name, value);
            }
        }
    });
}

/// A variable of the local stack: exported by scripts/test, else scripts/dev's value.
pub fn stack_var(name: &str) -> String {
    use_dev_stack_defaults();
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}
