//! `bench [auth|mfa|patients|correlated|fhir|lambda|uploads|writes|smart|export]`: timings through the real handlers (API Gateway event in, response out)
//! against the real database, next to the bare cost of the same work. Prints a Markdown report.
//! Run by scripts/bench, which starts the services and builds in release mode.

mod dataset;
mod export;
mod lambda;
mod mfa;
mod replaced;
mod runtime;
mod smart;

use std::time::{Duration, Instant};

use api_tests::{ApiRequest, TestApp, FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD};
use domain::users::USER_COLUMNS;
use shared::domain::Password;

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    runs: usize,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: samples.iter().sum::<Duration>() / samples.len() as u32,
        runs: samples.len(),
    }
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f().await);
        samples.push(start.elapsed());
    }
    stats(samples)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, s: &Stats) {
    println!(
        "| {what} | {} | {} | {} | {} |",
        s.runs,
        ms(s.p50),
        ms(s.p99),
        ms(s.mean)
    );
}

async fn auth() {
    let app = TestApp::new().await;
    let password = Password::parse("benchmark-password-1".into()).unwrap();
    let stored = shared::password::hash(&password).await.unwrap();

    println!(
        "## Auth (argon2id m={} KiB, t={}, p={})\n",
        shared::password::MEMORY_KIB,
        shared::password::ITERATIONS,
        shared::password::LANES
    );
    println!("| measurement | runs | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    row(
        "argon2id hash (new password)",
        &time(20, || shared::password::hash(&password)).await,
    );
    row(
        "argon2id verify (login's main cost)",
        &time(20, || {
            shared::password::verify("benchmark-password-1", Some(&stored))
        })
        .await,
    );
    row(
        "POST /login/access-token through the handler",
        &time(20, || app.login(FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD)).await,
    );
    row(
        "POST /login/access-token, unknown email (dummy hash)",
        &time(20, || {
            // A new address each time: repeated failures for one would be throttled (429)
            // before any hash is verified.
            let (app, email) = (&app, api_tests::unique_email("nobody"));
            async move { app.login(&email, FIRST_SUPERUSER_PASSWORD).await }
        })
        .await,
    );

    let token = app.superuser_token().await;
    let user_id = app
        .auth
        .auth
        .tokens
        .verify_access(&token)
        .await
        .unwrap()
        .user_id;
    row(
        "token verification alone (ES256, claims)",
        &time(100_000, || async {
            app.auth.auth.tokens.verify_access(&token).await
        })
        .await,
    );
    let client = app.db.client().await;
    let statement = client
        .prepare(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .await
        .unwrap();
    row(
        "bare SQL: user lookup by id (tokio-postgres)",
        &time(5_000, || async {
            client.query_one(&statement, &[&user_id]).await.unwrap()
        })
        .await,
    );
    row(
        "verification + user lookup (CurrentUser, pooled)",
        &time(5_000, || async {
            let session = app.auth.auth.tokens.verify_access(&token).await.unwrap();
            domain::users::find_by_id(&app.auth.db, session.user_id).await
        })
        .await,
    );
    row(
        "POST /login/test-token through the handler",
        &time(5_000, || {
            app.call(ApiRequest::post("/api/v1/login/test-token").bearer(&token))
        })
        .await,
    );
    println!();
}

/// Node types and index names of a plan, and whether it reads the whole patients table.
fn plan_summary(plan: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(node) = plan.get("Node Type").and_then(|v| v.as_str()) {
        let on = plan
            .get("Index Name")
            .or_else(|| plan.get("Relation Name"))
            .and_then(|v| v.as_str())
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        if node.contains("Scan") {
            out.push(format!("{node}{on}"));
        }
    }
    for child in plan
        .get("Plans")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        plan_summary(child, out);
    }
}

/// The 1M-patient database every scale benchmark reads: migrated, loaded once, analysed.
struct BenchData {
    dbname: String,
    client: shared::db::Connection,
    /// The first superuser, whose token the requests carry.
    admin: uuid::Uuid,
    /// Some(load time) when this run loaded the data set.
    loaded_in: Option<Duration>,
}

const PATIENTS: usize = 1_000_000;
const ATTACHMENTS: usize = 300_000;

impl BenchData {
    async fn open(set: dataset::DataSet) -> Self {
        // CAREVAULT_BENCH_DB names the uniform data set's database; the correlated one's name
        // follows it, so that two trees can each be measured on data sets of their own.
        let uniform =
            std::env::var("CAREVAULT_BENCH_DB").unwrap_or_else(|_| "carevault_bench".into());
        let dbname = match set {
            dataset::DataSet::Uniform => uniform,
            dataset::DataSet::Correlated => format!("{uniform}_correlated"),
            dataset::DataSet::Skewed => format!("{uniform}_skewed"),
        };
        if api_tests::admin_client()
            .await
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
            .await
            .unwrap()
            .is_none()
        {
            api_tests::admin_client()
                .await
                .batch_execute(&format!("CREATE DATABASE {dbname}"))
                .await
                .unwrap();
        }
        migrate::run(&api_tests::migrate_config(&dbname))
            .await
            .expect("migrate the bench database");
        let pool = shared::db::pool(&api_tests::database_config(&dbname)).unwrap();
        let client = pool.get().await.unwrap();
        let started = Instant::now();
        let loaded = dataset::ensure_loaded(&client, set, PATIENTS, ATTACHMENTS)
            .await
            .expect("load the data set");
        let loaded_in = loaded.then(|| started.elapsed());
        // Fresh statistics and visibility map, as autovacuum would have after a migration
        // rewrote the table.
        client
            .batch_execute("VACUUM ANALYZE patients")
            .await
            .unwrap();
        client
            .batch_execute("VACUUM ANALYZE attachments")
            .await
            .unwrap();
        client
            .batch_execute("VACUUM ANALYZE patient_attachment_types")
            .await
            .unwrap();
        client
            .batch_execute("VACUUM ANALYZE patient_search_terms")
            .await
            .unwrap();
        let admin = client
            .query_one("SELECT id FROM users WHERE is_superuser LIMIT 1", &[])
            .await
            .unwrap()
            .get(0);
        Self {
            dbname,
            client,
            admin,
            loaded_in,
        }
    }
}

async fn patients_at_scale(set: dataset::DataSet) {
    let data = BenchData::open(set).await;
    let (dbname, client, admin) = (&data.dbname, &data.client, data.admin);
    let [signing, public] = api_tests::token_settings();
    let env = shared::config::Env::from_pairs([
        ("DATABASE_URL", api_tests::db_url(dbname)),
        signing,
        public,
        ("S3_BUCKET", "carevault-bench".to_owned()),
    ]);
    let state = patients::PatientsState::from_env(&env).await.unwrap();
    let router = patients::router(state.clone());
    let token = api_tests::access_token_for(admin);
    let some_ids = uuids(
        client,
        "SELECT id FROM patients TABLESAMPLE SYSTEM (0.1) LIMIT 1000",
    )
    .await;

    println!("## Patients at 1M, {set:?} data set\n");
    if let Some(load_time) = data.loaded_in {
        println!(
            "Loaded {PATIENTS} patients and {ATTACHMENTS} attachments with COPY (generated columns and every index maintained) in {:.1} s.\n",
            load_time.as_secs_f64()
        );
    } else {
        println!("Data set already loaded ({PATIENTS} patients, {ATTACHMENTS} attachments).\n");
    }
    println!("| request | matches (count) | runs | p50 ms | p99 ms | statements sent p50 ms | GIN path p50 ms | matches alone p50 ms | physical reference p50 ms | plan (scans) |\n|---|---|---|---|---|---|---|---|---|---|");

    let mut i = 0usize;
    let by_id = time(500, || {
        i += 1;
        let id = some_ids[i % some_ids.len()];
        api_tests::invoke(
            router.clone(),
            ApiRequest::get(&format!("/api/v1/patients/{id}")).bearer(&token),
        )
    })
    .await;
    println!(
        "| GET /patients/{{id}} | 1 | {} | {} | {} | | | | | Index Scan on patients_pkey |",
        by_id.runs,
        ms(by_id.p50),
        ms(by_id.p99)
    );

    let uniform: &[(&str, &[(&str, &str)])] = &[
        ("name_text, selective", &[("name_text", "dvořák ígor")]),
        (
            "name_text, accent-free input",
            &[("name_text", "igor dvorak")],
        ),
        ("name_exact", &[("name_exact", "Zoë Østergaard")]),
        (
            "history_text, selective",
            &[("history_text", "sarcoidosis")],
        ),
        (
            "history_text, phrase",
            &[("history_text", "\"myasthenia gravis\"")],
        ),
        (
            "has_attachment_mime_type, selective",
            &[("has_attachment_mime_type", "application/x-bam")],
        ),
        (
            "dob range, one week",
            &[("dob_from", "1985-06-01"), ("dob_to", "1985-06-07")],
        ),
        (
            "name_text + dob range",
            &[
                ("name_text", "maria"),
                ("dob_from", "1990-01-01"),
                ("dob_to", "1990-12-31"),
            ],
        ),
        ("name_text, broad prefix", &[("name_text", "jo")]),
        ("name_text, broad, one word", &[("name_text", "maria")]),
        ("history_text, broad", &[("history_text", "hypertension")]),
        (
            "history_text, broad, count=estimate",
            &[("history_text", "hypertension"), ("count", "estimate")],
        ),
        (
            "history_text, exclusion, broad",
            &[("history_text", "diabetes -hypertension")],
        ),
        (
            "has_attachment_mime_type, broad",
            &[("has_attachment_mime_type", "application/pdf")],
        ),
        ("no filter (list), sort name", &[]),
        ("no filter, count=estimate", &[("count", "estimate")]),
        (
            "no filter, sort -created_at, page 50",
            &[("sort", "-created_at"), ("skip", "5000")],
        ),
    ];
    // The independent measurement's shapes (issue 14), on data correlated the same way.
    let correlated: &[(&str, &[(&str, &str)])] = &[
        ("no filter (list)", &[("limit", "100")]),
        (
            "history_text, broad, matches late in name order",
            &[("history_text", "asthma")],
        ),
        (
            "history_text, broad, two clusters, limit 20",
            &[("history_text", "gout"), ("limit", "20")],
        ),
        (
            "history_text, broad, limit 20 (the issue's tinnitus)",
            &[("history_text", "tinnitus"), ("limit", "20")],
        ),
        (
            "name_text, broad, contiguous in name order",
            &[("name_text", "Hiroshi")],
        ),
        (
            "name_text, hyphenated",
            &[("name_text", "smith-jones 1234")],
        ),
        ("name_exact", &[("name_exact", "Tamar Eriksen 4")]),
        (
            "has_attachment_mime_type, rare",
            &[("has_attachment_mime_type", "application/x-bam")],
        ),
        (
            "has_attachment_mime_type, broad",
            &[("has_attachment_mime_type", "application/pdf")],
        ),
        (
            "has_attachment_mime_type, one department",
            &[("has_attachment_mime_type", "application/dicom")],
        ),
        ("deep page by skip", &[("skip", "500000"), ("limit", "100")]),
        (
            "history_text + dob range (cohort)",
            &[
                ("history_text", "asthma"),
                ("dob_from", "1960-01-01"),
                ("dob_to", "1969-12-31"),
            ],
        ),
        (
            "history_text, broad, count=none, sort -dob",
            &[
                ("history_text", "asthma"),
                ("count", "none"),
                ("sort", "-dob"),
            ],
        ),
    ];
    // Chosen before this data set was generated (issue 30): the shapes of the table.
    let skewed: &[(&str, &[(&str, &str)])] = &[
        ("no filter (list)", &[("limit", "100")]),
        ("history_text, broad", &[("history_text", "hypertension")]),
        (
            "history_text, broad, limit 20",
            &[("history_text", "asthma"), ("limit", "20")],
        ),
        ("history_text, middling", &[("history_text", "gout")]),
        ("history_text, selective", &[("history_text", "porphyria")]),
        (
            "history_text, phrase",
            &[("history_text", "\"atrial fibrillation\"")],
        ),
        ("name_text, broad", &[("name_text", "James")]),
        ("name_text, broad prefix", &[("name_text", "ma")]),
        ("name_text, selective", &[("name_text", "Siobhán")]),
        ("name_text, two words", &[("name_text", "mary smith")]),
        (
            "name_text, broad, sort -name",
            &[("name_text", "James"), ("sort", "-name")],
        ),
        ("name_exact", &[("name_exact", "Mary Smith")]),
        (
            "has_attachment_mime_type, broad",
            &[("has_attachment_mime_type", "application/pdf")],
        ),
        ("deep page by skip", &[("skip", "500000"), ("limit", "100")]),
        (
            "history_text, broad, count=none, sort -dob",
            &[
                ("history_text", "hypertension"),
                ("count", "none"),
                ("sort", "-dob"),
            ],
        ),
    ];
    let shapes = match set {
        dataset::DataSet::Uniform => uniform,
        dataset::DataSet::Correlated => correlated,
        dataset::DataSet::Skewed => skewed,
    };
    for (label, query) in shapes {
        let request = || {
            let mut request = ApiRequest::get("/api/v1/patients/").bearer(&token);
            for (k, v) in *query {
                request = request.query(k, v);
            }
            request
        };
        let first = api_tests::invoke(router.clone(), request()).await;
        assert_eq!(first.status, 200, "{label}: {}", first.body);
        let count = first.json()["count"].clone();
        // The number of runs is chosen from a warm request (the first one plans with cold
        // statistics).
        let started = std::time::Instant::now();
        api_tests::invoke(router.clone(), request()).await;
        // Broad searches (a scan of their matches, over 50 ms) get 20 runs, the rest 50: the
        // whole benchmark has to fit in 20 minutes on 2 cores. Selective ones (under 10 ms) get
        // 300, so that their p99 is a percentile and not the slowest of a few runs.
        let runs = match started.elapsed().as_millis() {
            0..=9 => 300,
            10..=50 => 50,
            _ => 20,
        };
        let stats = time(runs, || api_tests::invoke(router.clone(), request())).await;
        let search = {
            let pairs: Vec<(String, String)> = query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let encoded = serde_urlencoded::to_string(&pairs).unwrap();
            domain::patients::search::Search::parse(serde_urlencoded::from_str(&encoded).unwrap())
                .unwrap()
        };
        // The GIN path (the statement sent before patient_search_terms, bare SQL), where the
        // terms table now answers: one more filter that is always true keeps it off that path.
        let gin_path = {
            let columns = domain::patients::model::PATIENT_COLUMNS;
            let mut search = domain::patients::search::Search::parse(
                serde_urlencoded::from_str(&serde_urlencoded::to_string(query).unwrap()).unwrap(),
            )
            .unwrap();
            if search.statement(columns).0.contains("patient_search_terms") {
                search
                    .filters
                    .push(domain::patients::search::Filter::AnyOf(vec![vec![]]));
                Some(bare_sql_p50(client, &[search.statement(columns)], runs.min(10)).await)
            } else {
                None
            }
        };
        // What collecting the matches alone costs (bare SQL): the floor of any page statement.
        let alone = bare_sql_p50(client, &matches_alone(&search), runs.min(10)).await;
        // How far from the limit: the bare index scan that finds the matches.
        let reference = physical_reference_p50(client, &search, runs.min(10)).await;
        // The statements the handler sends now, bare: compared with `before`, the same machine
        // and the same moment, without the handler's fixed cost (token, user, audit, JSON).
        let sent = bare_sql_p50(
            client,
            &statements_sent(client, &search).await,
            runs.min(50),
        )
        .await;

        // The plans of the statements the handler ran: the page with its count (and the estimate).
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let encoded = serde_urlencoded::to_string(&pairs).unwrap();
        let search =
            domain::patients::search::Search::parse(serde_urlencoded::from_str(&encoded).unwrap())
                .unwrap();
        let mut scans = Vec::new();
        let mut statements = vec![search.statement(domain::patients::model::PATIENT_COLUMNS)];
        if search.count == domain::paging::Count::Estimate {
            statements.push(search.estimate_sql());
        }
        for (sql, params) in &statements {
            let explain = format!(
                "EXPLAIN (FORMAT JSON) {}",
                sql.trim_start_matches("EXPLAIN (FORMAT JSON) ")
            );
            let typed = params.typed();
            let plan: serde_json::Value = client
                .query_typed_one(&explain, &typed)
                .await
                .unwrap()
                .get(0);
            plan_summary(&plan[0]["Plan"], &mut scans);
        }
        scans.dedup();
        println!(
            "| `{}` ({label}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
            count,
            stats.runs,
            ms(stats.p50),
            ms(stats.p99),
            ms(sent),
            gin_path.map(ms).unwrap_or_default(),
            ms(alone),
            reference.map(ms).unwrap_or_default(),
            scans.join("; ")
        );
    }
    println!();
}

/// The statement that only collects a search's matches: their count through the filters'
/// indexes (without filters: the sort index walked to the page, ids only).
fn matches_alone(
    search: &domain::patients::search::Search,
) -> Vec<(String, shared::db::SqlParams)> {
    let mut params = shared::db::SqlParams::new();
    let clause = search.where_clause(&mut params);
    if clause.is_empty() {
        let offset = params.push(search.skip, tokio_postgres::types::Type::INT8);
        let limit = params.push(search.limit, tokio_postgres::types::Type::INT8);
        return vec![(
            format!(
                "SELECT id FROM patients p ORDER BY p.name, p.id OFFSET {offset} LIMIT {limit}"
            ),
            params,
        )];
    }
    vec![(format!("SELECT count(*) FROM patients p{clause}"), params)]
}

/// The statements the handler sends for `search`: for a search without an exact count whose
/// estimate says a bounded walk will hold the page, the estimate and the walk (as run_search
/// decides; a walk that came back short would add the page statement); otherwise the page
/// statement, and the estimate for `count=estimate`.
async fn statements_sent(
    client: &tokio_postgres::Client,
    search: &domain::patients::search::Search,
) -> Vec<(String, shared::db::SqlParams)> {
    let columns = domain::patients::model::PATIENT_COLUMNS;
    if let Some(walk) = search.walk_statement(columns) {
        let (_, walk_is_likely) = domain::patients::estimate_walk(client, search)
            .await
            .unwrap();
        if walk_is_likely {
            return vec![search.estimate_sql(), walk];
        }
    }
    let mut statements = vec![search.statement(columns)];
    if search.count == domain::paging::Count::Estimate {
        statements.push(search.estimate_sql());
    }
    statements
}

/// A search's physical reference: what the index scans that find its matches cost alone (no
/// heap, no sort, no page), the p50 of `runs`. For the attachment-type filter, the distinct
/// patients of the type from the attachments index (the foreign key makes each a patient);
/// for the other filters, the index scans of `SELECT count(*)` over them, as EXPLAIN ANALYZE
/// times them. None without filters.
async fn physical_reference_p50(
    client: &tokio_postgres::Client,
    search: &domain::patients::search::Search,
    runs: usize,
) -> Option<Duration> {
    use domain::patients::search::Filter;
    if let [Filter::HasAttachmentMimeType(mime_type)] = search.filters.as_slice() {
        let sql = "SELECT count(DISTINCT patient_id) FROM attachments WHERE mime_type = $1";
        return Some(
            time(runs, || async {
                client.query_one(sql, &[mime_type]).await.unwrap();
            })
            .await
            .p50,
        );
    }
    let mut params = shared::db::SqlParams::new();
    let clause = search.where_clause(&mut params);
    if clause.is_empty() {
        return None;
    }
    let explain =
        format!("EXPLAIN (ANALYZE, TIMING, FORMAT JSON) SELECT count(*) FROM patients p{clause}");
    let mut timings = Vec::new();
    for _ in 0..runs {
        let plan: serde_json::Value = client
            .query_typed_one(&explain, &params.typed())
            .await
            .unwrap()
            .get(0);
        timings.push(index_scan_ms(&plan[0]["Plan"]));
    }
    timings.sort_by(f64::total_cmp);
    Some(Duration::from_secs_f64(timings[timings.len() / 2] / 1000.0))
}

/// The time of a plan's index scans (their own, as EXPLAIN ANALYZE reports them), in ms.
fn index_scan_ms(node: &serde_json::Value) -> f64 {
    let own = match node["Node Type"].as_str() {
        Some("Bitmap Index Scan" | "Index Scan" | "Index Only Scan") => {
            node["Actual Total Time"].as_f64().unwrap_or(0.0)
                * node["Actual Loops"].as_f64().unwrap_or(1.0)
        }
        _ => 0.0,
    };
    own + node["Plans"]
        .as_array()
        .map(|children| children.iter().map(index_scan_ms).sum())
        .unwrap_or(0.0)
}

/// The ids a query's first column holds.
async fn uuids(client: &tokio_postgres::Client, sql: &str) -> Vec<uuid::Uuid> {
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// The p50 of running `statements` one after the other.
async fn bare_sql_p50(
    client: &tokio_postgres::Client,
    statements: &[(String, shared::db::SqlParams)],
    runs: usize,
) -> Duration {
    time(runs, || async {
        for (sql, params) in statements {
            client.query_typed(sql, &params.typed()).await.unwrap();
        }
    })
    .await
    .p50
}

/// The functions as Lambda runs them, at 1M patients; writes target/bench/results.json.
async fn functions_as_lambda() {
    let data = BenchData::open(dataset::DataSet::Uniform).await;
    let (dbname, client, admin) = (&data.dbname, &data.client, data.admin);
    let patient: uuid::Uuid = client
        .query_one("SELECT id FROM patients LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let token = api_tests::access_token_for(admin);
    // What each function reads at cold start; AWS endpoints and keys come from scripts/bench.
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k == "PATH")
        .collect();
    env.extend(
        [
            ("ENVIRONMENT", "local".to_owned()),
            ("DATABASE_URL", api_tests::db_url(dbname)),
            ("S3_BUCKET", api_tests::stack_var("S3_BUCKET")),
            ("S3_FORCE_PATH_STYLE", "true".to_owned()),
            (
                "EXPORT_QUEUE_URL",
                api_tests::create_queue("carevault-bench-lambda-exports", 900).await,
            ),
        ]
        .into_iter()
        .chain(api_tests::token_settings())
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let results = lambda::run(dbname, env, &token, patient, admin).await;
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}

/// What the API adds to a multipart upload: the plan, each part URL (signing is local
/// computation; the request also records the part's digest and an audit event), the listing a
/// resume starts with, and the single-PUT creation next to it.
async fn uploads() {
    use serde_json::json;
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let patient = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(&token)
                .json(json!({"name": "Bench Genome"})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let create = |body: serde_json::Value| {
        let (app, token, patient) = (&app, &token, &patient);
        async move {
            let mut body = body;
            body["patient_id"] = json!(patient);
            let response = app
                .call(
                    ApiRequest::post("/api/v1/attachments/")
                        .bearer(token)
                        .json(body),
                )
                .await;
            assert_eq!(response.status, 200, "{}", response.body);
            response.json()
        }
    };
    let gib: u64 = 1 << 30;
    println!("## Uploads: what the API adds\n");
    println!("| measurement | runs | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    row(
        "POST /attachments/, single PUT (presigned URL)",
        &time(200, || create(json!({"file_name": "a.bin", "size": 1000}))).await,
    );
    row(
        "POST /attachments/, 1 GiB multipart (CreateMultipartUpload round trip)",
        &time(200, || create(json!({"file_name": "a.bam", "size": gib}))).await,
    );
    let upload = create(json!({"file_name": "big.bam", "size": 100 * gib})).await;
    let id = upload["id"].as_str().unwrap().to_owned();
    let digest = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let part_urls = |numbers: Vec<u32>| {
        let (app, token, id) = (&app, &token, &id);
        async move {
            let response = app
                .call(
                    ApiRequest::post(&format!("/api/v1/attachments/{id}/upload-parts"))
                        .bearer(token)
                        .json(
                            json!({"sha256": vec![digest; numbers.len()], "part_numbers": numbers}),
                        ),
                )
                .await;
            assert_eq!(response.status, 200, "{}", response.body);
        }
    };
    let storage = &app.attachments.storage;
    let key = domain::attachments::object_key(uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let sha = shared::domain::Sha256Digest::parse(digest.into()).unwrap();
    row(
        "presigning one part URL alone (local computation)",
        &time(2_000, || {
            storage.presign_part(&key, "upload-id", 7, 8 << 20, &sha)
        })
        .await,
    );
    let mut next = 0u32;
    row(
        "POST /attachments/{id}/upload-parts, 1 part",
        &time(500, || {
            next = next % 9_000 + 1;
            part_urls(vec![next])
        })
        .await,
    );
    let mut batch = 0u32;
    let hundred = time(100, || {
        batch = batch % 90 + 1;
        part_urls(((batch - 1) * 100 + 1..=batch * 100).collect())
    })
    .await;
    row("POST /attachments/{id}/upload-parts, 100 parts", &hundred);
    println!(
        "\nPer part URL in batches of 100: {} ms (p50 / 100).\n",
        ms(hundred.p50 / 100)
    );
    println!("| measurement | runs | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    row(
        "GET /attachments/{id}/upload-parts (ListParts, no part held)",
        &time(200, || {
            app.call(
                ApiRequest::get(&format!("/api/v1/attachments/{id}/upload-parts")).bearer(&token),
            )
        })
        .await,
    );
}

/// FHIR's Patient searches at 1M patients (uniform data set), through the fhir function's
/// router, next to the JSON API's same search through the patients function's router: the same
/// SQL paths, plus FHIR's Bundle. Every patient gets an MRN first (once per database).
async fn fhir_at_scale() {
    let data = BenchData::open(dataset::DataSet::Uniform).await;
    let (dbname, client, admin) = (&data.dbname, &data.client, data.admin);
    let started = Instant::now();
    let added = client
        .execute(
            "INSERT INTO patient_identifiers (system, value, patient_id)
             SELECT 'https://clinic.example/mrn', 'MRN-' || lpad(n::text, 7, '0'), id
             FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM patients) p
             WHERE NOT EXISTS (SELECT 1 FROM patient_identifiers LIMIT 1)",
            &[],
        )
        .await
        .unwrap();
    if added > 0 {
        client
            .batch_execute("VACUUM ANALYZE patient_identifiers")
            .await
            .unwrap();
    }
    let [signing, public] = api_tests::token_settings();
    let mut pairs: Vec<(&str, String)> = vec![
        ("DATABASE_URL", api_tests::db_url(dbname)),
        signing,
        public,
        ("S3_BUCKET", "carevault-bench".to_owned()),
        (
            "FHIR_BASE_URL",
            "https://api.clinic.example/fhir/R4".to_owned(),
        ),
        // The FHIR function's export queue (no kick-off is measured here).
        (
            "EXPORT_QUEUE_URL",
            api_tests::create_queue("carevault-bench-fhir-exports", 900).await,
        ),
    ];
    let aws: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    pairs.extend(aws.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let env = shared::config::Env::from_pairs(pairs);
    let fhir = fhir::router(fhir::FhirState::from_env(&env).await.unwrap());
    let json_api = patients::router(patients::PatientsState::from_env(&env).await.unwrap());
    let token = api_tests::access_token_for(admin);
    let (some_id, mrn): (uuid::Uuid, String) = {
        let row = client
            .query_one(
                "SELECT patient_id, value FROM patient_identifiers ORDER BY value OFFSET 500000 LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    // A cursor 50 pages deep, for the cost of following `next` links.
    let deep_cursor = {
        let mut url = String::new();
        let mut request = ApiRequest::get("/fhir/R4/Patient")
            .bearer(&token)
            .query("_count", "200")
            .query("_total", "none");
        for _ in 0..50 {
            let page = api_tests::invoke(fhir.clone(), request).await.json();
            url = page["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .unwrap()["url"]
                .as_str()
                .unwrap()
                .to_owned();
            let query = url.split_once('?').unwrap().1;
            request = ApiRequest::get("/fhir/R4/Patient").bearer(&token);
            for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap() {
                request = request.query(&k, &v);
            }
        }
        serde_urlencoded::from_str::<Vec<(String, String)>>(url.split_once('?').unwrap().1)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "_cursor")
            .unwrap()
            .1
    };
    println!("## FHIR searches at 1M patients (uniform data set)\n");
    if added > 0 {
        println!(
            "Gave every patient an MRN (`https://clinic.example/mrn`) in {:.1} s.\n",
            started.elapsed().as_secs_f64()
        );
    }
    println!("| FHIR request | entries | total | runs | p50 ms | p99 ms | JSON API equivalent | its p50 ms |\n|---|---|---|---|---|---|---|---|");
    let id = some_id.to_string();
    let identifier = format!("https://clinic.example/mrn|{mrn}");
    // (FHIR path, its query, the JSON API's path and query for the same search, if any)
    type Shape<'a> = (
        String,
        Vec<(&'a str, &'a str)>,
        String,
        Vec<(&'a str, &'a str)>,
    );
    let shapes: Vec<Shape> = vec![
        (
            "/Patient/{id}".to_owned(),
            vec![],
            format!("/api/v1/patients/{id}"),
            vec![],
        ),
        ("/Patient".into(), vec![("_id", &id)], String::new(), vec![]),
        (
            "/Patient".into(),
            vec![("identifier", &identifier)],
            String::new(),
            vec![],
        ),
        (
            "/Patient".into(),
            vec![("identifier", &mrn)],
            String::new(),
            vec![],
        ),
        (
            "/Patient".into(),
            vec![("name", "dvořák ígor")],
            "/api/v1/patients/".into(),
            vec![("name_text", "dvořák ígor"), ("limit", "20")],
        ),
        (
            "/Patient".into(),
            vec![("name:exact", "Zoë Østergaard")],
            "/api/v1/patients/".into(),
            vec![("name_exact", "Zoë Østergaard"), ("limit", "20")],
        ),
        (
            "/Patient".into(),
            vec![("name", "igor,zoë")],
            String::new(),
            vec![],
        ),
        (
            "/Patient".into(),
            vec![("birthdate", "1985-06-01")],
            "/api/v1/patients/".into(),
            vec![
                ("dob_from", "1985-06-01"),
                ("dob_to", "1985-06-01"),
                ("limit", "20"),
            ],
        ),
        (
            "/Patient".into(),
            vec![("name", "maria"), ("birthdate", "1990")],
            "/api/v1/patients/".into(),
            vec![
                ("name_text", "maria"),
                ("dob_from", "1990-01-01"),
                ("dob_to", "1990-12-31"),
                ("limit", "20"),
            ],
        ),
        (
            "/Patient".into(),
            vec![("name", "jo")],
            "/api/v1/patients/".into(),
            vec![("name_text", "jo"), ("limit", "20")],
        ),
        (
            "/Patient".into(),
            vec![("name", "jo"), ("_total", "none")],
            "/api/v1/patients/".into(),
            vec![("name_text", "jo"), ("limit", "20"), ("count", "none")],
        ),
        (
            "/Patient".into(),
            vec![],
            "/api/v1/patients/".into(),
            vec![("limit", "20")],
        ),
        (
            "/Patient".into(),
            vec![("_count", "200"), ("_sort", "-_lastUpdated")],
            "/api/v1/patients/".into(),
            vec![("limit", "200"), ("sort", "-updated_at")],
        ),
        (
            "/Patient".into(),
            vec![
                ("_count", "200"),
                ("_total", "none"),
                ("_cursor", &deep_cursor),
            ],
            String::new(),
            vec![],
        ),
    ];
    for (path, query, json_path, json_query) in &shapes {
        let fhir_path = path.replace("{id}", &id);
        let request = || {
            let mut request = ApiRequest::get(&format!("/fhir/R4{fhir_path}")).bearer(&token);
            for (k, v) in query {
                request = request.query(k, v);
            }
            request
        };
        let first = api_tests::invoke(fhir.clone(), request()).await;
        assert_eq!(first.status, 200, "{path} {query:?}: {}", first.body);
        let body = first.json();
        // A read answers the resource itself, a search a Bundle.
        let entries = match body["resourceType"].as_str() {
            Some("Bundle") => body["entry"].as_array().map_or(0, Vec::len),
            _ => 1,
        };
        let total = body["total"].as_i64().map_or("".into(), |t| t.to_string());
        let runs = if body["total"].as_i64().unwrap_or(0) > 10_000 {
            20
        } else {
            100
        };
        let stats = time(runs, || api_tests::invoke(fhir.clone(), request())).await;
        let (label, json_p50) = if json_path.is_empty() {
            ("(none)".to_owned(), String::new())
        } else {
            let json_request = || {
                let mut request = ApiRequest::get(json_path).bearer(&token);
                for (k, v) in json_query {
                    request = request.query(k, v);
                }
                request
            };
            let answer = api_tests::invoke(json_api.clone(), json_request()).await;
            assert_eq!(answer.status, 200, "{json_path}: {}", answer.body);
            let json_stats =
                time(runs, || api_tests::invoke(json_api.clone(), json_request())).await;
            let shown: Vec<String> = json_query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (
                format!(
                    "`{}{}{}`",
                    json_path.replace(&id, "{id}"),
                    if shown.is_empty() { "" } else { "?" },
                    shown.join("&")
                ),
                ms(json_stats.p50),
            )
        };
        let shown: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                if *k == "_cursor" {
                    format!("{k}=(50 pages deep)")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        println!(
            "| `{path}{}{}` | {entries} | {total} | {} | {} | {} | {label} | {json_p50} |",
            if shown.is_empty() { "" } else { "?" },
            shown.join("&").replace(&mrn, "MRN-…"),
            stats.runs,
            ms(stats.p50),
            ms(stats.p99),
        );
    }
    println!();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if matches!(which.as_str(), "all" | "auth") {
        auth().await;
    }
    if matches!(which.as_str(), "all" | "auth" | "mfa") {
        mfa::second_factors().await;
    }
    if matches!(which.as_str(), "all" | "patients") {
        patients_at_scale(dataset::DataSet::Uniform).await;
    }
    if matches!(which.as_str(), "all" | "patients" | "correlated") {
        patients_at_scale(dataset::DataSet::Correlated).await;
    }
    if matches!(which.as_str(), "all" | "patients" | "skewed") {
        patients_at_scale(dataset::DataSet::Skewed).await;
    }
    if matches!(which.as_str(), "all" | "replaced") {
        replaced::replaced_system().await;
    }
    if matches!(which.as_str(), "all" | "fhir") {
        fhir_at_scale().await;
    }
    if matches!(which.as_str(), "all" | "lambda") {
        functions_as_lambda().await;
    }
    if matches!(which.as_str(), "all" | "uploads") {
        uploads().await;
    }
    if matches!(which.as_str(), "all" | "writes") {
        writes_at_scale().await;
    }
    if matches!(which.as_str(), "all" | "smart") {
        smart::smart().await;
    }
    if matches!(which.as_str(), "all" | "export") {
        export::export_at_scale(dataset::DataSet::Uniform).await;
        export::export_at_scale(dataset::DataSet::Correlated).await;
    }
}

/// The writes that keep patient_attachment_types and patient_search_terms in step, through the handlers, on the
/// uniform data set (its tables and indexes at full size): each request alone, p50 and p99.
async fn writes_at_scale() {
    use serde_json::json;
    let data = BenchData::open(dataset::DataSet::Uniform).await;
    let (dbname, client, admin) = (&data.dbname, &data.client, data.admin);
    let bucket = "carevault-bench";
    let s3 = api_tests::s3_client().await;
    let _ = s3.create_bucket().bucket(bucket).send().await;
    let [signing, public] = api_tests::token_settings();
    let env = shared::config::Env::from_pairs([
        ("DATABASE_URL", api_tests::db_url(dbname)),
        signing,
        public,
        ("S3_BUCKET", bucket.to_owned()),
    ]);
    let patients = patients::router(patients::PatientsState::from_env(&env).await.unwrap());
    let attachments =
        attachments::router(attachments::AttachmentsState::from_env(&env).await.unwrap());
    let token = api_tests::access_token_for(admin);
    let run = std::process::id() as usize;
    // Patients who have PDFs already (their row in patient_attachment_types exists).
    let ids = uuids(
        client,
        "SELECT DISTINCT patient_id FROM attachments WHERE mime_type = 'application/pdf' LIMIT 400",
    )
    .await;
    let call = |router: &axum::Router, request: ApiRequest| {
        let router = router.clone();
        async move {
            let response = api_tests::invoke(router, request).await;
            assert!(response.status < 300, "{}", response.body);
            response
        }
    };
    println!("## Writes on the uniform data set (1M patients)\n");
    println!("| measurement | runs | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    let mut created = Vec::new();
    let mut next = 0;
    let create = time(ids.len(), || {
        next += 1;
        let body = json!({"patient_id": ids[next - 1], "file_name": "r.pdf", "mime_type": "application/pdf", "size": 1000});
        let request = ApiRequest::post("/api/v1/attachments/").bearer(&token).json(body);
        call(&attachments, request)
    })
    .await;
    row(
        "POST /attachments/ (a PDF for a patient who has PDFs)",
        &create,
    );
    created.extend(
        client
            .query(
                "SELECT id FROM attachments WHERE file_name = 'r.pdf' ORDER BY created_at DESC LIMIT $1",
                &[&(ids.len() as i64)],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, uuid::Uuid>(0)),
    );
    let mut next = 0;
    let delete = time(created.len(), || {
        next += 1;
        let path = format!("/api/v1/attachments/{}", created[next - 1]);
        call(&attachments, ApiRequest::delete(&path).bearer(&token))
    })
    .await;
    row(
        "DELETE /attachments/{id} (the patient keeps other PDFs)",
        &delete,
    );
    let mut next = 0;
    let rename = time(ids.len(), || {
        next += 1;
        let path = format!("/api/v1/patients/{}", ids[next - 1]);
        // A name of this run's own: a name sent again is no change (and no trigger).
        let body = json!({"name": format!("Renamed Bench {run} {next}")});
        call(
            &patients,
            ApiRequest::patch(&path).bearer(&token).json(body),
        )
    })
    .await;
    row(
        "PATCH /patients/{id} (a new name; the patient has PDFs)",
        &rename,
    );
    let mut next = 0;
    let new_history = time(ids.len(), || {
        next += 1;
        let path = format!("/api/v1/patients/{}", ids[next - 1]);
        let conditions = ["asthma", "gout", "tinnitus", "eczema", "migraine"];
        let body = json!({"medical_history": format!(
            "Follow-up {run}-{next}: {} controlled, new referral for {}.",
            conditions[(run + next) % 5],
            conditions[(run + next + 1) % 5]
        )});
        call(
            &patients,
            ApiRequest::patch(&path).bearer(&token).json(body),
        )
    })
    .await;
    row("PATCH /patients/{id} (a new history)", &new_history);
    let mut next = 0;
    let create_patient = time(400, || {
        next += 1;
        let body = json!({"name": format!("Created Bench {next}"), "medical_history": "Diagnosed with asthma several years ago. Family history of gout. Reports good control of hypertension."});
        call(
            &patients,
            ApiRequest::post("/api/v1/patients/").bearer(&token).json(body),
        )
    })
    .await;
    row(
        "POST /patients/ (a name and a three-sentence history)",
        &create_patient,
    );
    // Not part of the data set: the next run measures the same table.
    client
        .execute(
            "DELETE FROM patients WHERE name LIKE 'Created Bench %'",
            &[],
        )
        .await
        .unwrap();
    // Patients of their own, each with one file, deleted one by one.
    let mut doomed = Vec::new();
    for i in 0..200 {
        let body = json!({"name": format!("Doomed Bench {i}")});
        let request = ApiRequest::post("/api/v1/patients/")
            .bearer(&token)
            .json(body);
        let id = call(&patients, request).await.json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = json!({"patient_id": id, "file_name": "d.pdf", "mime_type": "application/pdf", "size": 10});
        call(
            &attachments,
            ApiRequest::post("/api/v1/attachments/")
                .bearer(&token)
                .json(body),
        )
        .await;
        doomed.push(id);
    }
    let mut next = 0;
    let delete_patient = time(doomed.len(), || {
        next += 1;
        let path = format!("/api/v1/patients/{}", doomed[next - 1]);
        call(&patients, ApiRequest::delete(&path).bearer(&token))
    })
    .await;
    row("DELETE /patients/{id} (one file)", &delete_patient);
    println!();
}
