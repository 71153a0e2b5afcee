//! `bench export`: a Patient-level FHIR bulk export of a whole data set (1M patients and their
//! 300,000 documents) through the real worker, fed from a real (local) SQS queue as the event
//! source mapping feeds it, next to its physical reference on the same database in the same
//! run: `psql` copying the same rows, as JSON, to stdout. Also the worker's peak memory, and the
//! plan (the snapshot copy) apart from the chunks.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{dataset, BenchData};

/// The same rows as JSON, built by PostgreSQL: what `psql` copies out for the reference.
const REFERENCE_SQL: &str = "COPY (
    SELECT json_build_object('resourceType', 'Patient', 'id', p.id, 'name', p.name,
        'birthDate', p.dob, 'telecom', p.contact_info, 'history', p.medical_history,
        'lastUpdated', p.updated_at, 'version', p.version,
        'identifier', (SELECT jsonb_agg(jsonb_build_object('system', i.system, 'value', i.value))
                       FROM patient_identifiers i WHERE i.patient_id = p.id))
    FROM patients p
    UNION ALL
    SELECT json_build_object('resourceType', 'DocumentReference', 'id', a.id,
        'subject', a.patient_id, 'title', a.file_name, 'contentType', a.mime_type,
        'size', a.size, 'status', a.status, 'date', a.created_at, 'uploaded', a.uploaded_at)
    FROM attachments a
) TO STDOUT";

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the process's peak resident memory (Linux: `5` to clear_refs), so the next reading
/// is the peak of what runs from now on.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `psql` copying the reference rows to a pipe we drain as it comes (never held whole):
/// (seconds, bytes, lines).
fn psql_reference(dbname: &str) -> (f64, u64, u64) {
    use std::io::Read;
    let config = api_tests::database_config(dbname);
    let started = Instant::now();
    let mut child = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &config.host,
            "-p",
            &config.port.to_string(),
            "-U",
            &config.user,
            "-d",
            dbname,
            "-c",
            REFERENCE_SQL,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs");
    let mut stdout = child.stdout.take().unwrap();
    let (mut bytes, mut lines, mut buffer) = (0u64, 0u64, vec![0u8; 1 << 20]);
    loop {
        let read = stdout.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        bytes += read as u64;
        lines += buffer[..read].iter().filter(|b| **b == b'\n').count() as u64;
    }
    assert!(child.wait().unwrap().success(), "psql failed");
    (started.elapsed().as_secs_f64(), bytes, lines)
}

struct Run {
    plan: Duration,
    total: Duration,
    resources: i64,
    bytes: i64,
    files: usize,
    chunks: usize,
}

/// One export through `workers` concurrent workers (each a Lambda instance of its own: its own
/// cold-started state and pool), from the kick-off's message to the job's completion.
async fn export(data: &BenchData, queue: &str, env: &shared::config::Env, workers: usize) -> Run {
    let pool = shared::db::pool(&api_tests::database_config(&data.dbname)).unwrap();
    let request = domain::exports::ExportRequest {
        owner: domain::exports::Owner::User(data.admin),
        level: domain::exports::Level::Patient,
        types: vec![
            domain::exports::ExportType::Patient,
            domain::exports::ExportType::DocumentReference,
        ],
        since: None,
        filters: Default::default(),
        request: "https://api.clinic.example/fhir/R4/Patient/$export".into(),
        fhir_base: "https://api.clinic.example/fhir/R4".into(),
        issues: Vec::new(),
    };
    let started = Instant::now();
    let job = domain::exports::start(&pool, &request)
        .await
        .expect("a job");
    let message =
        serde_json::to_string(&domain::exports::JobMessage::Plan { export_id: job.id }).unwrap();
    api_tests::sqs_client()
        .await
        .send_message()
        .queue_url(queue)
        .message_body(message)
        .send()
        .await
        .unwrap();
    let state = bulk_export::WorkerState::from_env(env).await.unwrap();
    // The plan alone (its message is the only one yet).
    let plan = api_tests::receive_event(queue)
        .await
        .expect("the plan message");
    let planned = Instant::now();
    let answer = invoke(&state, &plan).await;
    api_tests::delete_done(queue, &plan, &answer).await;
    let plan_time = planned.elapsed();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (queue, env) = (queue.to_owned(), env.clone());
        handles.push(std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let state = bulk_export::WorkerState::from_env(&env).await.unwrap();
                    let mut idle = 0;
                    while idle < 3 {
                        let Some(event) = api_tests::receive_event(&queue).await else {
                            idle += 1;
                            continue;
                        };
                        idle = 0;
                        let answer = invoke(&state, &event).await;
                        api_tests::delete_done(&queue, &event, &answer).await;
                    }
                })
        }));
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let total = started.elapsed();
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT e.status, e.chunks_total, count(f.*), coalesce(sum(f.resources), 0)::bigint,
                    coalesce(sum(f.bytes), 0)::bigint
             FROM bulk_exports e LEFT JOIN bulk_export_files f ON f.export_id = e.id
             WHERE e.id = $1 GROUP BY e.id",
            &[&job.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "completed");
    let run = Run {
        plan: plan_time,
        total,
        chunks: row.get::<_, i32>(1) as usize,
        files: row.get::<_, i64>(2) as usize,
        resources: row.get(3),
        bytes: row.get(4),
    };
    // Its files go (the bench's disk is not the archive), and the job with them.
    state
        .storage
        .delete_prefix(&domain::exports::job_prefix(job.id))
        .await
        .unwrap();
    client
        .execute("DELETE FROM bulk_exports WHERE id = $1", &[&job.id])
        .await
        .unwrap();
    run
}

async fn invoke(state: &bulk_export::WorkerState, event: &Value) -> Value {
    let event = serde_json::from_value(event.clone()).unwrap();
    serde_json::to_value(bulk_export::handle(state, event).await).unwrap()
}

pub async fn export_at_scale(set: dataset::DataSet) {
    let data = BenchData::open(set).await;
    let bucket = "carevault-bench";
    let _ = api_tests::s3_client()
        .await
        .create_bucket()
        .bucket(bucket)
        .send()
        .await;
    let queue = api_tests::create_queue(
        &format!("{}-export-steps", data.dbname.replace('_', "-")),
        900,
    )
    .await;
    let env = shared::config::Env::from_pairs([
        ("DATABASE_URL", api_tests::db_url(&data.dbname)),
        ("S3_BUCKET", bucket.to_owned()),
        ("S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("EXPORT_QUEUE_URL", queue.clone()),
        // As deployed: a plan copies the whole export in one statement.
        ("EXPORT_STATEMENT_TIMEOUT_MS", "840000".to_owned()),
    ]);
    println!("## Bulk export, {set:?} data set\n");
    let (psql_seconds, psql_bytes, psql_lines) = psql_reference(&data.dbname);
    reset_peak_rss();
    let before = peak_rss_mib();
    let one = export(&data, &queue, &env, 1).await;
    let peak = peak_rss_mib();
    let two = export(&data, &queue, &env, 2).await;
    let (psql_again, _, _) = psql_reference(&data.dbname);
    let reference = psql_seconds.min(psql_again);
    println!("| what | time | vs psql COPY |");
    println!("|---|---|---|");
    println!(
        "| psql COPY of the same rows as JSON ({psql_lines} lines, {:.0} MB), best of two | {reference:.1} s | 1.0x |",
        psql_bytes as f64 / 1e6
    );
    for (label, run) in [("1 worker", &one), ("2 workers", &two)] {
        println!(
            "| export, {label}: {} resources, {:.0} MB in {} files, {} chunks | {:.1} s (plan {:.1} s) | {:.2}x |",
            run.resources,
            run.bytes as f64 / 1e6,
            run.files,
            run.chunks,
            run.total.as_secs_f64(),
            run.plan.as_secs_f64(),
            run.total.as_secs_f64() / reference
        );
    }
    println!(
        "\nPeak resident memory of the process while one worker ran the whole export: {peak:.0} MiB (VmHWM, reset before it; the process held {before:.0} MiB then).\n"
    );
}
