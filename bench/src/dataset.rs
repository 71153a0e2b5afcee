//! Patient populations, generated deterministically and loaded with COPY, each load ending with
//! VACUUM ANALYZE as autovacuum would after a bulk import.
//!
//! `Uniform`: varied names (accented ones included), dates of birth, multi-sentence histories
//! drawn from a vocabulary of real conditions (common and rare), attachments of a dozen MIME
//! types, all independent of each other.
//!
//! `Correlated`: what real clinics look like and what fools a planner that assumes
//! independence: surnames shared by families, each of 30 first names carrying its own
//! condition (every asthma patient is a Hiroshi, so the matches sit together, late in name
//! order), conditions tied to birth cohorts, and attachments on a tenth of the patients with
//! MIME types skewed by department (most DICOM files from one group).

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Betty",
    "Anthony",
    "Margaret",
    "Mark",
    "Sandra",
    "José",
    "María",
    "Zoë",
    "Chloé",
    "Renée",
    "André",
    "François",
    "Søren",
    "Björn",
    "Łukasz",
    "Ígor",
    "Núria",
    "Ahmed",
    "Fatima",
    "Wei",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Olusegun",
    "Amara",
    "Priya",
    "Arjun",
    "Nikolai",
    "Olga",
    "Giulia",
    "Matteo",
    "Siobhán",
    "Seán",
    "Ana",
    "João",
    "Mateus",
    "Inês",
    "Dmitri",
    "Anya",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Álvarez",
    "Muñoz",
    "Núñez",
    "Müller",
    "Schröder",
    "Dvořák",
    "Kovač",
    "Nováková",
    "Østergaard",
    "Åkesson",
    "O'Brien",
    "McCarthy",
    "Nguyen",
    "Tran",
    "Kim",
    "Park",
    "Chen",
    "Wang",
    "Singh",
    "Patel",
    "Okafor",
    "Adeyemi",
    "Ivanov",
    "Petrov",
    "Rossi",
    "Bianchi",
    "Santos",
    "Oliveira",
    "Fernández",
    "Gómez",
    "Weiß",
];
/// Common conditions appear in many histories; the rare ones (last) in very few.
const COMMON: &[&str] = &[
    "hypertension",
    "type 2 diabetes",
    "asthma",
    "hyperlipidemia",
    "osteoarthritis",
    "depression",
    "anxiety",
    "obesity",
    "chronic back pain",
    "GERD",
    "hypothyroidism",
    "migraine",
    "allergic rhinitis",
    "atrial fibrillation",
    "COPD",
    "chronic kidney disease",
    "anemia",
    "insomnia",
    "gout",
    "eczema",
];
const RARE: &[&str] = &[
    "sarcoidosis",
    "myasthenia gravis",
    "amyloidosis",
    "pheochromocytoma",
    "acromegaly",
    "Wilson disease",
    "porphyria",
    "Addison disease",
    "Takayasu arteritis",
    "Behçet disease",
];
const SENTENCES: &[&str] = &[
    "Diagnosed with {} several years ago.",
    "History of {} managed with medication.",
    "Family history of {}.",
    "Presented with symptoms consistent with {}.",
    "Follow-up scheduled for {} monitoring.",
    "Reports good control of {}.",
    "Referred to a specialist for {}.",
];
pub const MIME_TYPES: &[&str] = &[
    "application/pdf",
    "image/jpeg",
    "image/png",
    "application/dicom",
    "text/plain",
    "image/tiff",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "text/csv",
    "application/json",
    "application/zip",
    "video/mp4",
    "application/x-bam",
];

/// Text-format COPY: backslash, tab and newline escaped.
fn field(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn history(rng: &mut fastrand::Rng) -> String {
    let sentences = rng.usize(2..=5);
    let mut text = String::new();
    for i in 0..sentences {
        // One history in 2,000 mentions a rare condition: selective searches find a few hundred.
        let condition = if rng.usize(0..2_000) == 0 {
            RARE[rng.usize(0..RARE.len())]
        } else {
            COMMON[rng.usize(0..COMMON.len())]
        };
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&SENTENCES[rng.usize(0..SENTENCES.len())].replace("{}", condition));
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSet {
    Uniform,
    Correlated,
    /// Written after the searches it measures were (issue 30's "one the project never saw"):
    /// Zipf-skewed names and conditions, middle and double-barrelled names, long histories, a
    /// third of the patients imported in name order, files concentrated on a few patients.
    Skewed,
}

/// Loads `patients` patients and `attachments` attachments unless the database already holds them.
pub async fn ensure_loaded(
    client: &Client,
    set: DataSet,
    patients: usize,
    attachments: usize,
) -> Result<bool, tokio_postgres::Error> {
    let have: i64 = client
        .query_one("SELECT patients FROM patient_totals", &[])
        .await?
        .get(0);
    if have as usize >= patients {
        return Ok(false);
    }
    client
        .batch_execute(
            "TRUNCATE attachments, patients, object_deletions, upload_parts, multipart_aborts, patient_identifiers, patient_attachment_types, smart_grants, smart_refresh_tokens, smart_launches, smart_authorizations, patient_group_members, bulk_exports, bulk_export_chunks, bulk_export_files, bulk_export_patients, bulk_export_documents, bulk_export_audit_events",
        )
        .await?;
    match set {
        DataSet::Uniform => load_uniform(client, patients, attachments).await?,
        DataSet::Correlated => load_correlated(client, patients, attachments).await?,
        DataSet::Skewed => load_skewed(client, patients, attachments).await?,
    }
    // As autovacuum would after a bulk load: statistics, and a visibility map for index-only
    // scans. (VACUUM cannot run inside a transaction block: one statement per call.)
    client.batch_execute("VACUUM ANALYZE patients").await?;
    client.batch_execute("VACUUM ANALYZE attachments").await?;
    Ok(true)
}

async fn load_uniform(
    client: &Client,
    patients: usize,
    attachments: usize,
) -> Result<(), tokio_postgres::Error> {
    let mut rng = fastrand::Rng::with_seed(20261127);
    let mut ids = Vec::with_capacity(patients);
    let mut copy = CopyIn::start(client, PATIENTS_COPY).await?;
    for i in 0..patients {
        let id = uuid::Uuid::from_u64_pair(rng.u64(..), rng.u64(..));
        ids.push(id);
        let name = format!(
            "{} {}",
            FIRST[rng.usize(0..FIRST.len())],
            LAST[rng.usize(0..LAST.len())]
        );
        let dob = chrono::NaiveDate::from_ymd_opt(
            1920 + rng.i32(0..100),
            rng.u32(1..=12),
            rng.u32(1..=28),
        )
        .unwrap();
        let phone = rng.u32(0..10_000);
        let history = history(&mut rng);
        copy.patient(phone, i, id, &name, dob, &history);
        copy.row_done().await?;
    }
    copy.finish().await?;

    let mut copy = CopyIn::start(client, ATTACHMENTS_COPY).await?;
    for _ in 0..attachments {
        let id = uuid::Uuid::from_u64_pair(rng.u64(..), rng.u64(..));
        let patient = ids[rng.usize(0..ids.len())];
        // Skewed: PDFs and images common; genomics files (x-bam, the last type) one in a thousand.
        let mime = if rng.usize(0..1_000) == 0 {
            MIME_TYPES[MIME_TYPES.len() - 1]
        } else {
            MIME_TYPES[(rng.f64().powi(3) * (MIME_TYPES.len() - 1) as f64) as usize]
        };
        copy.attachment(&mut rng, id, patient, mime);
        copy.row_done().await?;
    }
    copy.finish().await
}

const PATIENTS_COPY: &str =
    "COPY patients (id, name, dob, contact_info, medical_history, created_at) FROM STDIN";
const ATTACHMENTS_COPY: &str = "COPY attachments (id, patient_id, file_name, mime_type, object_key, status, size, etag, uploaded_at) FROM STDIN";

/// A text-format COPY FROM STDIN, sent 4 MB at a time: rows are written into `rows`, then
/// `row_done` sends what has piled up.
struct CopyIn {
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    rows: String,
}

impl CopyIn {
    async fn start(client: &Client, statement: &str) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            sink: Box::pin(client.copy_in(statement).await?),
            rows: String::with_capacity(4 << 20),
        })
    }

    async fn row_done(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.rows.len() > (4 << 20) - 4096 {
            self.sink
                .send(Bytes::from(std::mem::take(&mut self.rows)))
                .await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), tokio_postgres::Error> {
        self.sink
            .send(Bytes::from(std::mem::take(&mut self.rows)))
            .await?;
        self.sink.as_mut().finish().await?;
        Ok(())
    }

    /// One patient; the i-th is created 150 s after the one before (five years in all, so the
    /// created_at sort has real order).
    fn patient(
        &mut self,
        phone: u32,
        i: usize,
        id: uuid::Uuid,
        name: &str,
        dob: chrono::NaiveDate,
        history: &str,
    ) {
        let rows = &mut self.rows;
        rows.push_str(&id.to_string());
        rows.push('\t');
        field(rows, name);
        rows.push('\t');
        rows.push_str(&dob.to_string());
        rows.push('\t');
        rows.push_str(&format!("+1 555 {phone:04}"));
        rows.push('\t');
        field(rows, history);
        rows.push('\t');
        let created = chrono::DateTime::parse_from_rfc3339("2021-01-01T00:00:00Z").unwrap()
            + chrono::Duration::seconds(i as i64 * 150);
        rows.push_str(&created.to_rfc3339());
        rows.push('\n');
    }

    /// One uploaded attachment of `patient`.
    fn attachment(
        &mut self,
        rng: &mut fastrand::Rng,
        id: uuid::Uuid,
        patient: uuid::Uuid,
        mime: &str,
    ) {
        self.rows.push_str(&format!(
            "{id}\t{patient}\tfile-{id}.dat\t{mime}\tpatients/{patient}/attachments/{id}\tuploaded\t{}\t{:032x}\t2025-01-01 00:00:00+00\n",
            rng.u32(1_000..50_000_000),
            rng.u128(..)
        ));
    }
}

/// 30 first names in alphabetical order; the n-th carries `SIGNATURE[n % 20]` in every history.
const CORRELATED_FIRST: &[&str] = &[
    "Aaron", "Beatriz", "Carlos", "Dana", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas",
    "Kemal", "Lucia", "Marek", "Nadia", "Oskar", "Petra", "Quentin", "Rosa", "Stefan", "Tamar",
    "Ulrich", "Vera", "Walid", "Xenia", "Yusuf", "Zora", "Zoltan", "Zuzana", "Hiroshi", "Zyanya",
];
const CORRELATED_LAST: &[&str] = &[
    "Abe",
    "Berg",
    "Costa",
    "Diaz",
    "Eriksen",
    "Fischer",
    "Gallo",
    "Horvat",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Meyer",
    "Novak",
    "Ortiz",
    "Popescu",
    "Quinn",
    "Reyes",
    "Sato",
    "Tanaka",
    "Urban",
    "Vidal",
    "Weber",
    "Yilmaz",
    "Smith-Jones",
];
/// Each first name's own condition: the whole cohort of that name has it, nobody else does.
const SIGNATURE: &[&str] = &[
    "gout",
    "eczema",
    "psoriasis",
    "celiac disease",
    "glaucoma",
    "vitiligo",
    "sciatica",
    "tinnitus",
    "rosacea",
    "scoliosis",
    "bursitis",
    "tendinitis",
    "sinusitis",
    "vertigo",
    "cataract",
    "hernia",
    "neuropathy",
    "fibromyalgia",
    "pancreatitis",
    "asthma",
];
/// The conditions of a birth decade (from the 1930s on).
const COHORT: &[&str] = &[
    "osteoporosis",
    "atrial fibrillation",
    "hypertension",
    "type 2 diabetes",
    "hyperlipidemia",
    "hypothyroidism",
    "migraine",
    "anxiety",
    "allergic rhinitis",
];

async fn load_correlated(
    client: &Client,
    patients: usize,
    attachments: usize,
) -> Result<(), tokio_postgres::Error> {
    let mut rng = fastrand::Rng::with_seed(20261130);
    // The common conditions that are nobody's signature: a signature stays its name's alone.
    let others: Vec<&str> = COMMON
        .iter()
        .copied()
        .filter(|c| !SIGNATURE.contains(c))
        .collect();
    let mut ids = Vec::with_capacity(patients);
    let mut copy = CopyIn::start(client, PATIENTS_COPY).await?;
    for i in 0..patients {
        let id = uuid::Uuid::from_u64_pair(rng.u64(..), rng.u64(..));
        ids.push((id, i));
        // Families of about four share a surname and a household number.
        let family = i / 4;
        let first = i % CORRELATED_FIRST.len();
        let name = format!(
            "{} {} {}",
            CORRELATED_FIRST[first],
            CORRELATED_LAST[family % CORRELATED_LAST.len()],
            family
        );
        // Birth cohorts follow the family: members are born within a few years.
        let year = 1930 + (family * 7919 % 90) as i32 + rng.i32(0..3);
        let dob = chrono::NaiveDate::from_ymd_opt(year, rng.u32(1..=12), rng.u32(1..=28)).unwrap();
        let cohort = COHORT[((year - 1930) / 10) as usize % COHORT.len()];
        let signature = SIGNATURE[first % SIGNATURE.len()];
        // Four conditions: the name's own, the cohort's, two common ones.
        let history = format!(
            "Diagnosed with {signature}. History of {cohort} managed with medication. \
             Family history of {}. Reports good control of {}.",
            others[rng.usize(0..others.len())],
            others[rng.usize(0..others.len())]
        );
        copy.patient(rng.u32(0..10_000), i, id, &name, dob, &history);
        copy.row_done().await?;
    }
    copy.finish().await?;

    // Attachments on a tenth of the patients; DICOM from the first three first names (one
    // department), PDFs the bulk elsewhere, genomics files rare.
    let holders: Vec<(uuid::Uuid, usize)> = ids.into_iter().filter(|(_, i)| i % 10 == 0).collect();
    let mut copy = CopyIn::start(client, ATTACHMENTS_COPY).await?;
    for _ in 0..attachments {
        let id = uuid::Uuid::from_u64_pair(rng.u64(..), rng.u64(..));
        let (patient, i) = holders[rng.usize(0..holders.len())];
        let radiology = i % CORRELATED_FIRST.len() < 3;
        let roll = rng.usize(0..1_000);
        let mime = match (radiology, roll) {
            (_, 0..=1) => "application/x-bam",
            (true, 2..=899) => "application/dicom",
            (false, 2..=599) => "application/pdf",
            (false, 600..=799) => "image/jpeg",
            _ => MIME_TYPES[rng.usize(1..MIME_TYPES.len() - 1)],
        };
        copy.attachment(&mut rng, id, patient, mime);
        copy.row_done().await?;
    }
    copy.finish().await
}

/// The index of a Zipf-distributed draw over `n` ranks with exponent `s` (rank 0 the most
/// frequent), by inverting the cumulative weights.
fn zipf(rng: &mut fastrand::Rng, cumulative: &[f64]) -> usize {
    let x = rng.f64() * cumulative[cumulative.len() - 1];
    cumulative
        .partition_point(|c| *c < x)
        .min(cumulative.len() - 1)
}

fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n)
        .scan(0.0, |sum, rank| {
            *sum += 1.0 / (rank as f64).powf(s);
            Some(*sum)
        })
        .collect()
}

/// Sentences none of the other sets use, so the histories' common words differ too.
const SKEWED_SENTENCES: &[&str] = &[
    "Chronic {} noted at intake.",
    "Acute exacerbation of {} treated in the emergency department.",
    "Post-operative course complicated by {}.",
    "Screening for {} negative last year.",
    "Patient education provided regarding {}.",
    "Ongoing {}; medication adjusted at the last visit.",
    "{} suspected, awaiting confirmation.",
    "No recurrence of {} since discharge.",
];

async fn load_skewed(
    client: &Client,
    patients: usize,
    attachments: usize,
) -> Result<(), tokio_postgres::Error> {
    let mut rng = fastrand::Rng::with_seed(20261207);
    let first = zipf_weights(FIRST.len(), 1.1);
    let last = zipf_weights(LAST.len(), 0.9);
    let conditions: Vec<&str> = COMMON.iter().chain(RARE).copied().collect();
    let condition_weights = zipf_weights(conditions.len(), 1.3);
    let mut rows = Vec::with_capacity(patients);
    for _ in 0..patients {
        let id = uuid::Uuid::from_u64_pair(rng.u64(..), rng.u64(..));
        let mut name = FIRST[zipf(&mut rng, &first)].to_owned();
        if rng.usize(0..10) < 3 {
            name.push(' ');
            name.push_str(FIRST[zipf(&mut rng, &first)]);
        }
        name.push(' ');
        name.push_str(LAST[zipf(&mut rng, &last)]);
        if rng.usize(0..10) == 0 {
            name.push('-');
            name.push_str(LAST[rng.usize(0..LAST.len())]);
        }
        // Mostly elderly: ages pile up towards 100.
        let year = 2024 - (rng.f64().sqrt() * 100.0) as i32;
        let dob = chrono::NaiveDate::from_ymd_opt(year, rng.u32(1..=12), rng.u32(1..=28)).unwrap();
        let mut history = String::new();
        for i in 0..rng.usize(1..=8) {
            if i > 0 {
                history.push(' ');
            }
            let condition = conditions[zipf(&mut rng, &condition_weights)];
            history.push_str(
                &SKEWED_SENTENCES[rng.usize(0..SKEWED_SENTENCES.len())].replace("{}", condition),
            );
        }
        rows.push((id, name, dob, history));
    }
    // A third of the patients came from a legacy import sorted by name: their rows sit in name
    // order in the table, the rest in the order they were created.
    let imported = patients / 3;
    rows[..imported].sort_by(|a, b| a.1.cmp(&b.1));
    let mut copy = CopyIn::start(client, PATIENTS_COPY).await?;
    for (i, (id, name, dob, history)) in rows.iter().enumerate() {
        copy.patient(rng.u32(0..10_000), i, *id, name, *dob, history);
        copy.row_done().await?;
    }
    copy.finish().await?;

    // Files concentrated: a twentieth of the patients hold most of them; types Zipf-skewed.
    let mime_weights = zipf_weights(MIME_TYPES.len(), 1.5);
    let mut copy = CopyIn::start(client, ATTACHMENTS_COPY).await?;
    for _ in 0..attachments {
        let id = uuid::Uuid::from_u64_pair(rng.u64(..), rng.u64(..));
        let holder = if rng.usize(0..10) < 8 {
            rng.usize(0..patients / 20)
        } else {
            rng.usize(0..patients)
        };
        let mime = MIME_TYPES[zipf(&mut rng, &mime_weights)];
        copy.attachment(&mut rng, id, rows[holder].0, mime);
        copy.row_done().await?;
    }
    copy.finish().await
}
