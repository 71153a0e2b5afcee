//! Each function as Lambda runs it: the release `bootstrap` (built by `cargo lambda build
//! --release`, as `sam build` does) against our Runtime API. Cold starts, warm requests next to
//! the same SQL run bare, peak memory and sizes; writes target/bench/results.json.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api_tests::ApiRequest;
use domain::users::USER_COLUMNS;
use serde_json::{json, Value};

use crate::runtime::{FunctionProcess, RuntimeApi};
use crate::{ms, stats, Stats};

const COLD_STARTS: usize = 20;
const WARM_RUNS: usize = 10_000;

fn bootstrap(function: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/lambda/{function}/bootstrap"))
}

/// The "cold start complete" line the function logs: its init steps. Read on a thread of its
/// own and waited for at most 10 s, so a function that never logs it cannot stall the run.
fn cold_start_line(process: &mut FunctionProcess) -> Option<Value> {
    let stdout = process.child.stdout.take()?;
    let (found, line_found) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("cold start complete") {
                let _ = found.send(serde_json::from_str::<Value>(&line).ok());
            }
            // Keep draining so the function never blocks on a full pipe.
            line.clear();
        }
    });
    let value = line_found.recv_timeout(Duration::from_secs(10)).ok()??;
    Some(value["fields"].clone())
}

struct Route {
    function: &'static str,
    label: &'static str,
    event: Value,
    /// The route's statements, run bare with tokio-postgres.
    bare: Vec<(&'static str, String)>,
}

pub async fn run(
    dbname: &str,
    env: Vec<(String, String)>,
    token: &str,
    patient: uuid::Uuid,
    admin: uuid::Uuid,
) -> Value {
    let config = api_tests::database_config(dbname);
    let (bare_client, connection) = config
        .pg_config()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // One of the data set's uploaded attachments, for the download route.
    let attachment: uuid::Uuid = bare_client
        .query_one(
            "SELECT id FROM attachments WHERE status = 'uploaded' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let event = |request: ApiRequest| request.bearer(token).to_event();
    let user_lookup = format!("SELECT {USER_COLUMNS} FROM users WHERE id = '{admin}'");
    let audit = "INSERT INTO audit_events (id, actor_id, action, outcome, resource_type, patient_id, request_id, details) \
                 VALUES (gen_random_uuid(), NULL, 'bench', 'success', 'patient', NULL, 'bench', '{}')"
        .to_owned();
    let routes = vec![
        Route {
            function: "utils",
            label: "GET /utils/health-check/",
            event: ApiRequest::get("/api/v1/utils/health-check/").to_event(),
            // The route's only SQL is the pool's liveness check: one trivial round trip.
            bare: vec![("one round trip", "SELECT 1".into())],
        },
        Route {
            function: "auth",
            label: "POST /login/test-token",
            event: event(ApiRequest::post("/api/v1/login/test-token")),
            bare: vec![("user lookup", user_lookup.clone())],
        },
        Route {
            function: "users",
            label: "GET /users/me",
            event: event(ApiRequest::get("/api/v1/users/me")),
            bare: vec![("user lookup", user_lookup.clone())],
        },
        Route {
            function: "patients",
            label: "GET /patients/{id} (1M patients)",
            event: event(ApiRequest::get(&format!("/api/v1/patients/{patient}"))),
            bare: vec![
                ("user lookup", user_lookup.clone()),
                ("patient", format!("SELECT * FROM patients WHERE id = '{patient}'")),
                ("audit insert", audit.clone()),
            ],
        },
        Route {
            function: "patients",
            label: "GET /patients/?name_text=dvořák ígor (249 of 1M)",
            event: event(ApiRequest::get("/api/v1/patients/").query("name_text", "dvořák ígor")),
            bare: vec![
                ("user lookup", user_lookup.clone()),
                (
                    "page",
                    "SELECT * FROM patients p WHERE p.name_search @@ carevault_prefix_query('dvořák ígor') ORDER BY p.name, p.id LIMIT 100".into(),
                ),
                (
                    "count",
                    "SELECT count(*) FROM patients p WHERE p.name_search @@ carevault_prefix_query('dvořák ígor')".into(),
                ),
                ("audit insert", audit.clone()),
            ],
        },
        Route {
            function: "patients",
            label: "POST /patients/",
            event: event(ApiRequest::post("/api/v1/patients/").json(json!({"name": "Bench Patient", "dob": "1980-01-01"}))),
            bare: vec![
                ("user lookup", user_lookup.clone()),
                (
                    "insert with its audit event",
                                            "WITH created AS (INSERT INTO patients (id, name, dob) VALUES (gen_random_uuid(), 'Bench Patient', '1980-01-01') RETURNING *), \
                         logged AS (INSERT INTO audit_events (id, action, outcome, resource_type, resource_id, patient_id, details) \
                         SELECT gen_random_uuid(), 'bench', 'success', 'patient', id, id, '{}' FROM created) SELECT * FROM created"
                        .to_owned(),
                ),
            ],
        },
        Route {
            function: "attachments",
            label: "POST /attachments/ (presigned upload)",
            event: event(ApiRequest::post("/api/v1/attachments/").json(json!({"patient_id": patient, "file_name": "scan.png", "mime_type": "image/png", "size": 1000}))),
            bare: vec![
                ("user lookup", user_lookup.clone()),
                (
                    "insert with its audit event",
                    format!(
                        "WITH created AS (INSERT INTO attachments (id, patient_id, file_name, mime_type, object_key) \
                         SELECT gen_random_uuid(), p.id, 'scan.png', 'image/png', gen_random_uuid()::text FROM patients p WHERE p.id = '{patient}' RETURNING *), \
                         logged AS (INSERT INTO audit_events (id, action, outcome, resource_type, resource_id, patient_id, details) \
                         SELECT gen_random_uuid(), 'bench', 'success', 'attachment', id, patient_id, '{{}}' FROM created) SELECT * FROM created"
                    ),
                ),
            ],
        },
        Route {
            function: "attachments",
            label: "GET /attachments/{id}/content (302 to a presigned URL)",
            event: event(ApiRequest::get(&format!("/api/v1/attachments/{attachment}/content"))),
            bare: vec![
                ("user lookup", user_lookup.clone()),
                ("attachment", format!("SELECT * FROM attachments WHERE id = '{attachment}'")),
                ("audit insert", audit.clone()),
            ],
        },
        Route {
            function: "audit",
            label: "GET /audit-events/?limit=100",
            event: event(ApiRequest::get("/api/v1/audit-events/").query("limit", "100")),
            bare: vec![
                ("user lookup", user_lookup.clone()),
                (
                    "page",
                    "SELECT id, occurred_at, actor_id, actor_email, action, outcome, resource_type, resource_id, \
                     patient_id, request_id, source_ip, user_agent, details FROM audit_events \
                     ORDER BY occurred_at DESC, id DESC LIMIT 101"
                        .into(),
                ),
                ("audit insert", audit.clone()),
            ],
        },
    ];
    // The functions that API Gateway does not call: cold starts only, with their own events.
    let event_functions = [
        (
            "attachment-events",
            api_tests::event("attachment-events/s3-object-created.json"),
        ),
        ("migrate", api_tests::event("migrate/direct-invoke.json")),
    ];

    let mut report = serde_json::Map::new();
    let mut cold_rows = Vec::new();
    let mut functions_done = Vec::new();
    println!("## Functions through the Lambda Runtime API\n");
    println!("Warm requests, one at a time ({WARM_RUNS} per route), against the bare SQL of the same route:\n");
    println!("| route | p50 ms | p99 ms | req/s | bare SQL p50 ms | ratio | above bare ms |\n|---|---|---|---|---|---|---|");
    for route in &routes {
        let binary = bootstrap(route.function);
        if !functions_done.contains(&route.function) {
            functions_done.push(route.function);
            cold_rows.push(cold_starts(route.function, &binary, &env, &route.event).await);
        }
        let api = RuntimeApi::start().await;
        let mut process = FunctionProcess::spawn(&binary, &api.address, &env);
        let _ = cold_start_line(&mut process);
        let mut samples = Vec::with_capacity(WARM_RUNS);
        // Warm-up: the connection, the prepared statements.
        for _ in 0..50 {
            api.invoke(route.event.clone()).await.unwrap();
        }
        let started = Instant::now();
        for _ in 0..WARM_RUNS {
            let t = Instant::now();
            let response = api.invoke(route.event.clone()).await.expect("a response");
            samples.push(t.elapsed());
            debug_assert!(
                response["statusCode"].as_u64().is_some_and(|s| s < 400),
                "{response}"
            );
        }
        let total = started.elapsed();
        let first = api.invoke(route.event.clone()).await.unwrap();
        assert!(
            first["statusCode"].as_u64().unwrap() < 400,
            "{}: {first}",
            route.label
        );
        let warm = stats(samples);
        let rss = process.peak_rss_kib();
        drop(process);

        let mut bare = Vec::with_capacity(WARM_RUNS);
        for _ in 0..WARM_RUNS {
            let t = Instant::now();
            for (_, sql) in &route.bare {
                bare_client.simple_query(sql).await.unwrap();
            }
            bare.push(t.elapsed());
        }
        let bare = stats(bare);
        let rps = WARM_RUNS as f64 / total.as_secs_f64();
        let ratio = warm.p50.as_secs_f64() / bare.p50.as_secs_f64();
        let above = warm.p50.saturating_sub(bare.p50);
        println!(
            "| {} | {} | {} | {:.0} | {} | {:.2} | {} |",
            route.label,
            ms(warm.p50),
            ms(warm.p99),
            rps,
            ms(bare.p50),
            ratio,
            ms(above)
        );
        report.insert(
            route.label.to_owned(),
            json!({
                "function": route.function,
                "p50_ms": warm.p50.as_secs_f64() * 1e3,
                "p99_ms": warm.p99.as_secs_f64() * 1e3,
                "requests_per_second": rps,
                "bare_sql_p50_ms": bare.p50.as_secs_f64() * 1e3,
                "bare_statements": route.bare.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                "ratio_to_bare": ratio,
                "peak_rss_kib": rss,
            }),
        );
    }
    for (function, event) in &event_functions {
        cold_rows.push(cold_starts(function, &bootstrap(function), &env, event).await);
    }
    println!("\nCold starts ({COLD_STARTS} per function, median), peak memory and size:\n");
    println!("| function | init ms | first response ms | init steps (median ms) | peak RSS MB | bootstrap MB | zip MB |\n|---|---|---|---|---|---|---|");
    for row in &cold_rows {
        println!(
            "| {} | {:.1} | {:.1} | {} | {:.1} | {:.2} | {:.2} |",
            row["function"].as_str().unwrap(),
            row["init_ms"].as_f64().unwrap(),
            row["first_response_ms"].as_f64().unwrap(),
            row["steps"].as_str().unwrap_or(""),
            row["peak_rss_kib"].as_f64().unwrap() / 1024.0,
            row["bootstrap_bytes"].as_f64().unwrap() / 1048576.0,
            row["zip_bytes"].as_f64().unwrap() / 1048576.0,
        );
    }
    println!();
    json!({ "warm": report, "cold": cold_rows })
}

async fn cold_starts(
    function: &str,
    binary: &Path,
    env: &[(String, String)],
    event: &Value,
) -> Value {
    let mut inits = Vec::new();
    let mut firsts = Vec::new();
    let mut steps: Vec<Value> = Vec::new();
    let mut rss = 0;
    for _ in 0..COLD_STARTS {
        let mut api = RuntimeApi::start().await;
        let mut process = FunctionProcess::spawn(binary, &api.address, env);
        let polled = api.first_poll().await;
        inits.push(polled - process.started);
        api.invoke(event.clone()).await.expect("first response");
        firsts.push(process.started.elapsed());
        rss = rss.max(process.peak_rss_kib());
        if let Some(line) = cold_start_line(&mut process) {
            steps.push(line);
        }
    }
    let init = stats(inits);
    let first = stats(firsts);
    let step_names = ["secrets_ms", "pool_ms", "aws_sdk_ms"];
    let medians: Vec<String> = step_names
        .iter()
        .filter_map(|name| {
            let mut values: Vec<f64> = steps
                .iter()
                .filter_map(|s| {
                    s["steps"]
                        .as_str()
                        .and_then(|t| serde_json::from_str::<Value>(t).ok())
                })
                .filter_map(|s| s[*name].as_f64())
                .collect();
            if values.is_empty() {
                return None;
            }
            values.sort_by(|a, b| a.partial_cmp(b).unwrap());
            Some(format!(
                "{} {:.2}",
                name.trim_end_matches("_ms"),
                values[values.len() / 2]
            ))
        })
        .collect();
    let bytes = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
    json!({
        "function": function,
        "init_ms": median(&init),
        "first_response_ms": median(&first),
        "steps": medians.join(", "),
        "peak_rss_kib": rss,
        "bootstrap_bytes": bytes,
        "zip_bytes": zip_size(binary),
    })
}

fn median(s: &Stats) -> f64 {
    s.p50.as_secs_f64() * 1e3
}

/// The size of the deployment zip: `bootstrap` deflated, as sam packages it.
fn zip_size(binary: &Path) -> u64 {
    let out = std::env::temp_dir().join(format!("bench-{}.zip", uuid::Uuid::new_v4()));
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED); z.write(sys.argv[1], 'bootstrap'); z.close()",
        ])
        .arg(binary)
        .arg(&out)
        .status();
    let size = status
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&out).ok())
        .map(|m| m.len())
        .unwrap_or(0);
    let _ = std::fs::remove_file(out);
    size
}
