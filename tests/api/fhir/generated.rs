//! Generated input for FHIR (proptest), as `generated.rs` does for the JSON API: every search
//! parameter of every resource (with modifiers and prefixes), `If-None-Exist`, `If-Match`, ids
//! in paths, `_cursor` values (random ones and real ones mutated) and bodies, written in hostile
//! text: multi-byte, combining, right-to-left, NUL and other controls, lone surrogates as JSON
//! escapes, invalid UTF-8 percent-encoded, 100 KB and empty. Whatever arrives, the answer comes
//! within `BOUND`, below 500, and an error is an OperationOutcome.
//!
//! Generated text names this app's records through placeholders (`@patient`, `@document`...),
//! which each case replaces with the real ids (`Fixture::fill`): a mutated id or a real id in a
//! hostile setting reaches the code that finds the record, not only the parser that refuses it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_tests::{function_for, invoke_event, ApiRequest, ApiResponse, TestApp};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Value};

use super::{follow, form_pairs, ids, links, patients, with_documents};
use crate::generated::{below_500, json_value_with, property_with};

/// How long an answer may take before the request counts as hung (the function's own timeout
/// in template.yaml is 10 s).
const BOUND: Duration = Duration::from_secs(10);

/// What hostile text is made of: multi-byte, combining, right-to-left, invisible, NUL and other
/// controls, what FHIR's syntax gives meaning, the start of real values, and this app's ids.
const PIECES: &[&str] = &[
    "a",
    "Ann",
    "é",
    "e\u{301}",
    "\u{301}",
    "ß",
    "ǅ",
    "\u{130}",
    "日本",
    "😀",
    "👩\u{200D}⚕️",
    "\u{10FFFF}",
    "\u{FFFD}",
    "\u{202E}",
    "\u{200F}",
    "שלום",
    "مرحبا",
    "\u{200B}",
    "\u{FEFF}",
    "\u{3000}",
    "\u{A0}",
    "\0",
    "\t",
    "\n",
    "\r",
    "\u{7F}",
    "\u{85}",
    "\u{2028}",
    " ",
    ",",
    "|",
    "/",
    ":",
    ".",
    "-",
    "+",
    "T",
    "Z",
    "$",
    "%",
    "&",
    "=",
    "?",
    "#",
    "\\",
    "\"",
    "'",
    "*",
    "_",
    "ge",
    "lt",
    "ne",
    "sa",
    "ap",
    "Patient/",
    "urn:uuid:",
    "1980",
    "2024-02-29",
    "T10:20:30.123Z",
    "+14:00",
    "9999",
    "0000",
    "@patient",
    "@document",
    "@event",
];

/// Text as a hostile client writes it where API Gateway takes at most 10 KB (a query string,
/// a path, a header): pieces, any printable Unicode, anything but a newline (NUL and controls
/// too), nothing, or 1 KB to 8 KB of one piece.
fn text() -> BoxedStrategy<String> {
    text_up_to(8_000)
}

/// Text as `text` makes it, for a body: up to 100 KB.
fn long_text() -> BoxedStrategy<String> {
    text_up_to(100_000)
}

fn text_up_to(longest: usize) -> BoxedStrategy<String> {
    prop_oneof![
        5 => prop::collection::vec(select(PIECES), 0..8).prop_map(|p| p.concat()),
        2 => "\\PC{0,24}",
        1 => ".{0,24}",
        1 => Just(String::new()),
        // Long text of one piece (not a placeholder, which grows when filled).
        1 => (select(PIECES.iter().copied().filter(|p| !p.starts_with('@')).collect::<Vec<_>>()),
              select(vec![1_000, longest]))
            .prop_map(|(piece, bytes)| piece.repeat(bytes / piece.len() + 1)),
    ]
    .boxed()
}

/// Text that can be a header's value (API Gateway delivers no control character in one).
fn header_text() -> impl Strategy<Value = String> {
    text().prop_map(|t| t.chars().filter(|c| !c.is_control()).collect())
}

/// Ids as a client may write them: this app's (as they are, upper case, without hyphens, one
/// digit short), the nil and the max UUID, within other text, or any text.
fn id_text() -> BoxedStrategy<String> {
    let ids = select(
        &[
            "@patient",
            "@PATIENT",
            "@simple",
            "@short",
            "{@patient}",
            "urn:uuid:@patient",
            "@document",
            "@pending",
            "@event",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ][..],
    );
    prop_oneof![
        3 => ids.clone().prop_map(str::to_owned),
        1 => (ids.clone(), text()).prop_map(|(id, t)| format!("{id}{t}")),
        1 => (text(), ids).prop_map(|(t, id)| format!("{t}{id}")),
        2 => text(),
    ]
    .boxed()
}

/// What a search parameter's value is, for values that get past its parser.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Date,
    Token,
    Reference,
    Text,
    /// Codes, `|` between them.
    Codes(&'static str),
    Count,
    Cursor,
}

/// Dates and instants at the edges: of the calendar, of a precision, of an offset.
const EDGE_DATES: &[&str] = &[
    "0000",
    "0000-01-01",
    "lt0000-01-01",
    "eb0000-01-01T00:00Z",
    "0000-01-01T00:00:00+23:59",
    "gt9999",
    "gt9999-12-31",
    "ne9999-12",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-23:59",
    "sa9999-12-31T23:59:59.9999999999999Z",
    "2024-02-29",
    "2023-02-29",
    "2024-13",
    "2024-00-10",
    "1980-01-01T24:00:00Z",
    "1980-01-01T23:59:60Z",
    "1980-01-01T10:00",
    "1980-01-01T10:00+01",
    "ge1980-01-01T10:00:00.Z",
    "ap1980",
    "1980-01-01TT",
    "T",
];

fn date() -> BoxedStrategy<String> {
    // Each part in its range (but 24 o'clock and second 60), or any digits.
    let precise = concat!(
        "(eq|ne|gt|lt|ge|le|sa|eb|ap)?[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])",
        "(T([01][0-9]|2[0-4]):[0-5][0-9](:[0-6][0-9](\\.[0-9]{0,12})?)?",
        "(Z|z|[+-]([01][0-9]|2[0-4]):[0-5][0-9])?)?)?)?"
    );
    let loose = concat!(
        "(eq|ne|gt|lt|ge|le|sa|eb|ap|EQ|g)?[0-9]{0,6}(-[0-9]{0,3}(-[0-9]{0,3}",
        "(T[0-9]{0,3}(:[0-9]{0,3}(:[0-9]{0,3}(\\.[0-9]{0,3})?)?)?",
        "(Z|[+-][0-9]{0,3}(:?[0-9]{0,3})?)?)?)?)?"
    );
    prop_oneof![
        4 => precise,
        2 => loose,
        2 => select(EDGE_DATES).prop_map(str::to_owned),
        // A hostile piece somewhere in a real date.
        2 => (precise, any::<Index>(), select(PIECES)).prop_map(|(date, at, piece)| {
            let at = at.index(date.len() + 1);
            format!("{}{piece}{}", &date[..at], &date[at..])
        }),
    ]
    .boxed()
}

/// A value of `kind`, one that its parser takes apart rather than refuses at once.
fn typed(kind: Kind) -> BoxedStrategy<String> {
    match kind {
        Kind::Date => date(),
        Kind::Token => prop_oneof![
            select(
                &[
                    "urn:oid:1.2.3|MRN-1",
                    "urn:oid:1.2.3|",
                    "|MRN-1",
                    "MRN-1",
                    "|",
                    "||"
                ][..]
            )
            .prop_map(str::to_owned),
            (text(), text()).prop_map(|(system, value)| format!("{system}|{value}")),
            (
                select(&["", "https://carevault.dev/fhir/sid/user-id|"][..]),
                id_text()
            )
                .prop_map(|(system, id)| format!("{system}{id}")),
        ]
        .boxed(),
        Kind::Reference => (
            select(
                &[
                    "",
                    "Patient/",
                    "patient/",
                    "DocumentReference/",
                    "https://api.carevault.test/fhir/R4/Patient/",
                    "Patient//",
                    "/",
                ][..],
            ),
            id_text(),
        )
            .prop_map(|(prefix, id)| format!("{prefix}{id}"))
            .boxed(),
        Kind::Text => text(),
        Kind::Codes(codes) => {
            let codes: Vec<&str> = codes.split('|').collect();
            prop_oneof![
                2 => select(codes.clone()).prop_map(str::to_owned),
                1 => prop::collection::vec(select(codes), 1..5).prop_map(|c| c.join(",")),
            ]
            .boxed()
        }
        Kind::Count => prop_oneof![
            "-?[0-9]{1,25}",
            select(&["0", "1", "200", "201", "-1", "+5", " 3 ", "1.5", "1e3", ""][..])
                .prop_map(str::to_owned),
        ]
        .boxed(),
        Kind::Cursor => prop_oneof![Just("@cursor".to_owned()), text()].boxed(),
    }
}

/// A query-string key or value as it travels: text (percent-encoded, as a client encodes it),
/// bytes percent-encoded one by one (invalid UTF-8 too), or raw ASCII a URI's query may hold
/// (`%zz`, a lone `%`, more `&` and `=`; not `"`, `<`, `>`, `#` or a space).
#[derive(Debug, Clone)]
enum Sent {
    Text(String),
    Bytes(Vec<u8>),
    Raw(String),
}

/// Byte sequences no UTF-8 decoder takes: a stray continuation, an overlong form, a surrogate,
/// past U+10FFFF, cut short.
const INVALID_UTF8: &[&[u8]] = &[
    &[0xFF],
    &[0x80],
    &[0xC3, 0x28],
    &[0xC0, 0xAF],
    &[0xED, 0xA0, 0x80],
    &[0xF4, 0x90, 0x80, 0x80],
    &[0xE2, 0x82],
    &[0xF0, 0x9F, 0x98],
    &[0x00],
];

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        (select(INVALID_UTF8), "[a-z0-9]{0,4}")
            .prop_map(|(bad, text)| [text.as_bytes(), bad].concat()),
    ]
}

/// A value of `kind`, several of them (alternatives, past the most a parameter may list), or
/// anything.
fn sent(kind: Kind) -> impl Strategy<Value = Sent> {
    prop_oneof![
        6 => typed(kind).prop_map(Sent::Text),
        2 => prop::collection::vec(typed(kind), 2..40)
            .prop_filter("at most 8 KB", |v| v.iter().map(String::len).sum::<usize>() <= 8_000)
            .prop_map(|v| Sent::Text(v.join(","))),
        3 => text().prop_map(Sent::Text),
        1 => bytes().prop_map(Sent::Bytes),
        1 => "[!$-;=?-~]{0,12}".prop_map(Sent::Raw),
    ]
}

/// Modifiers FHIR defines (none supported but `name:exact`), type modifiers, and any text.
const MODIFIERS: &[&str] = &[
    "exact",
    "contains",
    "missing",
    "not",
    "text",
    "above",
    "below",
    "in",
    "not-in",
    "of-type",
    "identifier",
    "Patient",
    "DocumentReference",
    "",
];

fn modifier() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        8 => Just(None),
        2 => select(MODIFIERS).prop_map(|m| Some(m.to_owned())),
        1 => text().prop_map(Some),
    ]
}

/// The parameters every search takes, and some that none applies.
const COMMON: &[(&str, Kind)] = &[
    ("_count", Kind::Count),
    ("_cursor", Kind::Cursor),
    ("_total", Kind::Codes("none|estimate|accurate|NONE|")),
    (
        "_format",
        Kind::Codes("json|application/fhir+json|xml|html|"),
    ),
    ("_summary", Kind::Codes("true|count|false")),
    ("_elements", Kind::Text),
    ("_include", Kind::Text),
    ("_has:Patient:link:name", Kind::Text),
];

const PATIENT: &[(&str, Kind)] = &[
    ("_id", Kind::Reference),
    ("name", Kind::Text),
    ("birthdate", Kind::Date),
    ("identifier", Kind::Token),
    ("_lastUpdated", Kind::Date),
    (
        "_sort",
        Kind::Codes("name|-name|birthdate|-birthdate|_lastUpdated|-_lastUpdated|family|-|"),
    ),
    ("general-practitioner.name", Kind::Text),
];

const DOCUMENT_REFERENCE: &[(&str, Kind)] = &[
    ("patient", Kind::Reference),
    ("subject", Kind::Reference),
    (
        "contenttype",
        Kind::Codes(concat!(
            "application/pdf|APPLICATION/PDF|application/dicom|",
            "text/plain; charset=utf-8|*/*|\u{130}/x"
        )),
    ),
    ("date", Kind::Date),
    ("patient.identifier", Kind::Token),
];

const AUDIT_EVENT: &[(&str, Kind)] = &[
    ("patient", Kind::Reference),
    ("date", Kind::Date),
    ("agent", Kind::Token),
    ("action", Kind::Codes("C|R|U|D|E|c|X")),
    ("outcome", Kind::Codes("0|4|8|12|00|-1")),
];

/// One `name[:modifier]=value` of a search with `own` parameters: a known or common name, or
/// any key (text or bytes).
fn param(own: &'static [(&'static str, Kind)]) -> impl Strategy<Value = (Sent, Sent)> {
    let known = (
        select(own.iter().chain(COMMON).copied().collect::<Vec<_>>()),
        modifier(),
    )
        .prop_flat_map(|((name, kind), modifier)| {
            let name = match modifier {
                Some(m) => format!("{name}:{m}"),
                None => name.to_owned(),
            };
            (Just(Sent::Text(name)), sent(kind))
        });
    prop_oneof![
        8 => known,
        1 => (text().prop_map(Sent::Text), sent(Kind::Text)),
        1 => (bytes().prop_map(Sent::Bytes), sent(Kind::Text)),
    ]
}

/// Whether `params`, percent-encoded, stay within the longest URI the Lambda adapter builds
/// (64 KB; API Gateway itself takes no request line past 10 KB).
fn fits_a_uri(params: &[(Sent, Sent)]) -> bool {
    let length = |sent: &Sent| match sent {
        Sent::Text(text) => text.len(),
        Sent::Bytes(bytes) => bytes.len(),
        Sent::Raw(raw) => raw.len(),
    };
    let raw: usize = params
        .iter()
        .map(|(k, v)| length(k) + length(v) + 100)
        .sum();
    raw * 3 < 60_000
}

/// Bytes percent-encoded as a client encodes them (every byte but the unreserved ones).
fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (*b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `text` cut to a readable length for a failure's message.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}... ({} bytes)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

/// A cursor a search handed out: its resource, the `_sort` it was made for, the cursor.
#[derive(Debug, Clone)]
struct RealCursor {
    resource: &'static str,
    sort: Option<&'static str>,
    value: String,
}

const PATIENT_SORTS: [&str; 6] = [
    "name",
    "-name",
    "birthdate",
    "-birthdate",
    "_lastUpdated",
    "-_lastUpdated",
];

/// Ends the process when a request runs well past `BOUND`: one that spins never yields to the
/// runtime (a test's one thread), so `tokio::time::timeout` cannot end it.
struct Watchdog(Arc<Mutex<Option<(Instant, String)>>>);

impl Watchdog {
    fn new() -> Self {
        let running = Arc::new(Mutex::new(None::<(Instant, String)>));
        let watched = running.clone();
        std::thread::spawn(move || {
            // Until the property is over (its fixture dropped).
            while Arc::strong_count(&watched) > 1 {
                std::thread::sleep(Duration::from_millis(500));
                if let Some((since, what)) = &*watched.lock().unwrap() {
                    if since.elapsed() > BOUND + Duration::from_secs(5) {
                        eprintln!("{what}: no answer within {BOUND:?}: the request spins");
                        std::process::exit(1);
                    }
                }
            }
        });
        Self(running)
    }

    fn start(&self, what: &str) {
        *self.0.lock().unwrap() = Some((Instant::now(), what.to_owned()));
    }

    fn stop(&self) {
        *self.0.lock().unwrap() = None;
    }
}

/// One property's app: its users, records for generated text to name, and the cursors its
/// searches handed out.
struct Fixture {
    app: TestApp,
    clinician: String,
    superuser: String,
    patient: String,
    /// An uploaded document and a pending one (of a patient of their own).
    document: String,
    pending: String,
    event: String,
    cursors: Vec<RealCursor>,
    watchdog: Watchdog,
}

impl Fixture {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let clinician = app.clinician().await.token;
        let superuser = app.superuser_token().await;
        let people = [
            json!({"name": "Ann Lee", "dob": "1980-02-29",
                   "identifiers": [{"system": "urn:oid:1.2.3", "value": "MRN-1"}]}),
            json!({"name": "Ben Ode"}),
            json!({"name": "Zoë \u{202E}Ünal", "dob": "2001-01-01"}),
        ];
        let made = patients(&app, &clinician, people.into_iter()).await;
        let (_, document, pending, _) = with_documents(&app, &clinician).await;
        let mut fixture = Self {
            app,
            clinician,
            superuser,
            patient: made[0].clone(),
            document,
            pending,
            event: String::new(),
            cursors: Vec::new(),
            watchdog: Watchdog::new(),
        };
        for sort in PATIENT_SORTS {
            fixture.collect_cursors("Patient", Some(sort)).await;
        }
        fixture.collect_cursors("DocumentReference", None).await;
        let events = fixture.collect_cursors("AuditEvent", None).await;
        fixture.event = ids(&events)[0].clone();
        fixture
    }

    /// The token for `path`: a superuser's for AuditEvent, a clinician's elsewhere.
    fn token_for(&self, path: &str) -> &str {
        if path.contains("AuditEvent") {
            &self.superuser
        } else {
            &self.clinician
        }
    }

    /// Keeps the cursors of a first page of one (its next link) and of the page after it (both
    /// links); the first page.
    async fn collect_cursors(
        &mut self,
        resource: &'static str,
        sort: Option<&'static str>,
    ) -> Value {
        let path = format!("/fhir/R4/{resource}");
        let token = self.token_for(&path).to_owned();
        let mut first = ApiRequest::get(&path).bearer(&token).query("_count", "1");
        if let Some(sort) = sort {
            first = first.query("_sort", sort);
        }
        let first = self.app.call(first).await;
        assert_eq!(first.status, 200, "{}", first.body);
        let first = first.json();
        let (_, next) = links(&first)
            .into_iter()
            .find(|(relation, _)| relation == "next")
            .expect("a next link");
        let second = self.app.call(follow(&token, &next)).await.json();
        for (_, url) in links(&second).into_iter().chain(links(&first)) {
            let query = url.split_once('?').map_or("", |(_, q)| q);
            if let Some((_, value)) = form_pairs(query).into_iter().find(|(k, _)| k == "_cursor") {
                self.cursors.push(RealCursor {
                    resource,
                    sort,
                    value,
                });
            }
        }
        first
    }

    /// `text` with its placeholders replaced by this app's ids and cursors.
    fn fill(&self, text: &str) -> String {
        text.replace("@PATIENT", &self.patient.to_uppercase())
            .replace("@simple", &self.patient.replace('-', ""))
            .replace("@short", &self.patient[..35])
            .replace("@patient", &self.patient)
            .replace("@document", &self.document)
            .replace("@pending", &self.pending)
            .replace("@event", &self.event)
            .replace("@cursor", &self.cursors[0].value)
            .replace("@unique", &uuid::Uuid::new_v4().to_string())
    }

    /// A key or value as it stands in the query string.
    fn encoded(&self, sent: &Sent) -> String {
        match sent {
            Sent::Text(text) => escaped(self.fill(text).as_bytes()),
            Sent::Bytes(bytes) => bytes.iter().map(|b| format!("%{b:02X}")).collect(),
            Sent::Raw(raw) => raw.clone(),
        }
    }

    fn query(&self, pairs: &[(Sent, Sent)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", self.encoded(k), self.encoded(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Sends `method path?raw_query` (`more` adds headers and a body) where API Gateway would,
    /// as the user `path` needs, and checks the answer: it comes within `BOUND`, below 500, and
    /// when it is an error it is an OperationOutcome.
    async fn send(
        &self,
        method: &str,
        path: &str,
        raw_query: &str,
        more: impl FnOnce(ApiRequest) -> ApiRequest,
    ) -> Result<ApiResponse, String> {
        let what = format!("{method} {}?{}", shortened(path), shortened(raw_query));
        let function = function_for(method, path);
        if function != Some("fhir") {
            return Err(format!("{what}: routed to {function:?}, not to fhir"));
        }
        let request = more(ApiRequest::new(method, path).bearer(self.token_for(path)));
        let mut event = request.to_event();
        event["rawQueryString"] = Value::String(raw_query.to_owned());
        self.watchdog.start(&what);
        let call = invoke_event(self.app.router_of("fhir"), event);
        let response = tokio::time::timeout(BOUND, call).await;
        self.watchdog.stop();
        let response = response.map_err(|_| format!("{what}: no answer within {BOUND:?}"))?;
        below_500(&what, response.status, &shortened(&response.body))?;
        let body: Value = serde_json::from_str(&response.body).unwrap_or_default();
        if response.status >= 400 && body["resourceType"] != "OperationOutcome" {
            return Err(format!(
                "{what}: {} without an OperationOutcome: {}",
                response.status,
                shortened(&response.body)
            ));
        }
        Ok(response)
    }
}

/// A search of `resource` with up to four generated parameters, leniently or not.
fn search_property(resource: &'static str, own: &'static [(&'static str, Kind)], cases: u32) {
    let params = prop::collection::vec(param(own), 0..5).prop_filter("a URI", |p| fits_a_uri(p));
    let search = (params, any::<bool>());
    property_with(
        cases,
        Fixture::new,
        search,
        move |fixture, (params, lenient)| async move {
            let path = format!("/fhir/R4/{resource}");
            let outcome = fixture
                .send("GET", &path, &fixture.query(&params), |request| {
                    if lenient {
                        request.header("prefer", "handling=lenient")
                    } else {
                        request
                    }
                })
                .await;
            (fixture, outcome.map(drop))
        },
    );
}

#[test]
fn every_search_parameter_is_generated() {
    for (own, applied) in [
        (PATIENT, &fhir::PATIENT_PARAMETERS[..]),
        (DOCUMENT_REFERENCE, &fhir::DOCUMENT_PARAMETERS[..]),
        (AUDIT_EVENT, &fhir::AUDIT_EVENT_PARAMETERS[..]),
    ] {
        for name in applied
            .iter()
            .chain(&["_count", "_cursor", "_total", "_format"])
        {
            assert!(
                own.iter().chain(COMMON).any(|(n, _)| n == name),
                "{name} is not generated"
            );
        }
    }
}

#[test]
fn patient_search_parameters_never_give_a_server_error() {
    search_property("Patient", PATIENT, 128);
}

#[test]
fn document_reference_search_parameters_never_give_a_server_error() {
    search_property("DocumentReference", DOCUMENT_REFERENCE, 128);
}

#[test]
fn audit_event_search_parameters_never_give_a_server_error() {
    search_property("AuditEvent", AUDIT_EVENT, 128);
}

const MEDICAL_HISTORY: &str = "https://carevault.dev/fhir/StructureDefinition/medical-history";

/// A Patient every rule takes (its identifier new each time `fill` runs).
fn valid_patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "@patient",
        "name": [{"text": "Ann Lee", "given": ["Ann"], "family": "Lee"}],
        "birthDate": "1980-02-29",
        "telecom": [{"system": "email", "value": "ann@example.com"}],
        "extension": [{"url": MEDICAL_HISTORY, "valueString": "None known"}],
        "identifier": [{"system": "urn:oid:1.2.3", "value": "@unique"}],
    })
}

fn valid_document() -> Value {
    json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/@patient"},
        "content": [{"attachment": {
            "contentType": "application/pdf", "title": "report.pdf", "size": 1024
        }}],
    })
}

/// `If-None-Exist` criteria: Patient search parameters (with a `?` or not), or any text.
#[derive(Debug, Clone)]
enum Criteria {
    Query(Vec<(Sent, Sent)>, bool),
    Text(String),
}

#[test]
fn if_none_exist_never_gives_a_server_error() {
    let criteria = prop_oneof![
        3 => (prop::collection::vec(param(PATIENT), 1..4), any::<bool>())
            .prop_map(|(params, question)| Criteria::Query(params, question)),
        1 => header_text().prop_map(Criteria::Text),
    ];
    // The identifier is Ann's (a match), new, or one this property's creations share.
    let identifier = select(&["MRN-1", "@unique", "MRN-9"][..]);
    property_with(
        96,
        Fixture::new,
        (criteria, identifier),
        |fixture, (criteria, identifier)| async move {
            let header = match &criteria {
                Criteria::Query(params, question) => {
                    format!(
                        "{}{}",
                        if *question { "?" } else { "" },
                        fixture.query(params)
                    )
                }
                Criteria::Text(text) => fixture.fill(text),
            };
            let mut body = valid_patient();
            body["identifier"][0]["value"] = json!(identifier);
            let body = fixture.fill(&body.to_string());
            let outcome = fixture
                .send("POST", "/fhir/R4/Patient", "", |request| {
                    request
                        .raw_body("application/fhir+json", &body)
                        .header("if-none-exist", &header)
                })
                .await;
            (fixture, outcome.map(drop))
        },
    );
}

#[test]
fn if_match_never_gives_a_server_error() {
    let tag = prop_oneof![
        3 => select(&[
            "W/\"@version\"",
            "\"@version\"",
            "@version",
            "*",
            "W/\"0\"",
            "W/\"-1\"",
            "W/\"9223372036854775807\"",
            "W/\"9223372036854775808\"",
            "W/\"-9223372036854775808\"",
            "W/\"99999999999999999999999\"",
            "W/\"9\", W/\"@version\"",
            "W/\"9\", *",
            "W/",
            "\"\"",
            "",
            ",",
        ][..]).prop_map(str::to_owned),
        1 => "W/\"-?[0-9]{0,25}\"",
        2 => header_text(),
    ];
    let case = (select(&["PUT", "DELETE"][..]), prop::option::of(tag));
    property_with(
        96,
        Fixture::new,
        case,
        |fixture, (method, tag)| async move {
            let outcome = async {
                // A patient of the case's own: its version is known, and a delete leaves the
                // others.
                let created = fixture
                    .send("POST", "/fhir/R4/Patient", "", |request| {
                        request.json(
                            json!({"resourceType": "Patient", "name": [{"text": "If Match"}]}),
                        )
                    })
                    .await?
                    .json();
                let id = created["id"].as_str().unwrap_or_default().to_owned();
                let version = created["meta"]["versionId"].as_str().unwrap_or_default();
                let path = format!("/fhir/R4/Patient/{id}");
                fixture
                    .send(method, &path, "", |request| {
                        let request = match method {
                            "PUT" => request.json(json!({
                                "resourceType": "Patient", "id": id, "name": [{"text": "Matched"}]
                            })),
                            _ => request,
                        };
                        match &tag {
                            Some(tag) => request.header(
                                "if-match",
                                &fixture.fill(&tag.replace("@version", version)),
                            ),
                            None => request,
                        }
                    })
                    .await
                    .map(drop)
            }
            .await;
            (fixture, outcome)
        },
    );
}

/// The interactions that take an id: method, the path before the id, the path after it.
const BY_ID: &[(&str, &str, &str)] = &[
    ("GET", "Patient", ""),
    ("PUT", "Patient", ""),
    ("DELETE", "Patient", ""),
    ("GET", "DocumentReference", ""),
    ("DELETE", "DocumentReference", ""),
    ("GET", "Binary", ""),
    ("GET", "Binary", "/$presigned-url"),
    ("GET", "AuditEvent", ""),
];

#[test]
fn ids_in_paths_never_give_a_server_error() {
    let id = prop_oneof![
        4 => id_text().prop_map(Sent::Text),
        1 => bytes().prop_map(Sent::Bytes),
    ];
    let tail = prop_oneof![
        6 => Just(""),
        1 => select(&["/", "/_history/1", "/$everything", "//"][..]),
    ];
    let case = (select(BY_ID), id, tail, any::<bool>());
    property_with(
        128,
        Fixture::new,
        case,
        |fixture, ((method, before, after), id, tail, upload)| async move {
            let path = format!("/fhir/R4/{before}/{}{after}{tail}", fixture.encoded(&id));
            // A PUT's resource carries the id as the server decodes it from the path.
            let decoded = match &id {
                Sent::Text(text) => fixture.fill(text),
                Sent::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Sent::Raw(raw) => raw.clone(),
            };
            let query = if upload { "upload=true" } else { "" };
            let outcome = fixture
                .send(method, &path, query, |request| match method {
                    "PUT" => request.json(json!({
                        "resourceType": "Patient", "id": decoded, "name": [{"text": "By Id"}]
                    })),
                    _ => request,
                })
                .await;
            (fixture, outcome.map(drop))
        },
    );
}

/// What a case does to a real cursor.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    /// Any text instead.
    Text(String),
    /// One character replaced.
    Replace(Index, char),
    Truncate(Index),
    Append(String),
    Prefix(&'static str),
    /// Its JSON with the sort value set to this one, encoded again.
    Key(Value),
    /// Its JSON with the field at the index (of up to five: list, sort value, id, direction,
    /// one more) set to the value, encoded again.
    Field(Index, Value),
    /// Text that the cursor formats decode (base64url of it), never made by the server.
    Encoded(String),
    /// DocumentReference's first format's shape, `<µs>_<id>`.
    Plain(String),
}

/// Sort values at the edges of what a cursor may carry: microseconds at and past the ends of
/// chrono's range and PostgreSQL's, dates before PostgreSQL's first (4713 BC) and after
/// chrono's last, text.
fn cursor_value() -> BoxedStrategy<Value> {
    let micros: &[i64] = &[
        i64::MAX,
        i64::MIN,
        0,
        -1,
        253_402_300_800_000_000,
        -62_167_219_200_000_000,
        -210_866_803_200_000_000,
        -210_866_803_200_000_001,
        -211_000_000_000_000_000,
        -8_200_000_000_000_000_000,
        8_200_000_000_000_000_000,
        9_223_372_036_854_775_806,
    ];
    let dates = &[
        "0000-01-01",
        "-0001-12-31",
        "-4713-11-24",
        "-4714-11-24",
        "-4714-11-23",
        "-5000-01-01",
        "-262143-01-01",
        "+262142-12-31",
        "262143-12-31",
        "5874897-12-31",
        "1980-02-30",
        "",
    ][..];
    prop_oneof![
        3 => select(micros).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        3 => select(dates).prop_map(Value::from),
        2 => text().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => json_value_with(FHIR_KEYS),
    ]
    .boxed()
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => Just(Edit::Keep),
        2 => text().prop_map(Edit::Text),
        2 => (any::<Index>(), prop_oneof![
            "[A-Za-z0-9_-]".prop_map(|s| s.chars().next().unwrap()),
            any::<char>(),
        ]).prop_map(|(at, c)| Edit::Replace(at, c)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => text().prop_map(Edit::Append),
        1 => select(&["prev.", "prev.prev.", " ", "\u{3000}", "=", "d|"][..])
            .prop_map(Edit::Prefix),
        8 => cursor_value().prop_map(Edit::Key),
        2 => (any::<Index>(), cursor_value()).prop_map(|(at, v)| Edit::Field(at, v)),
        2 => prop_oneof![
            "-?[0-9]{1,20}\\|@patient(\\|before)?",
            "d\\|-?[0-9]{1,20}\\|@document(\\|before|\\|after)?",
            concat!(
                "\\[\"(audit_events|documents|name|-name|dob|-dob|updated_at|-updated_at)\",",
                "-?[0-9]{1,20},\"@document\"(,\"before\")?\\]"
            ),
            text(),
        ].prop_map(Edit::Encoded),
        1 => "-?[0-9]{1,20}_(@document|@event|x)".prop_map(Edit::Plain),
    ]
}

/// The JSON of `cursor` (base64url of an array) with its field `at` set to `value` (added
/// past its end).
fn with_field(cursor: &str, at: usize, value: &Value) -> String {
    let decoded = URL_SAFE_NO_PAD.decode(cursor).unwrap_or_default();
    let mut fields: Vec<Value> = serde_json::from_slice(&decoded).unwrap_or_default();
    match fields.get_mut(at) {
        Some(field) => *field = value.clone(),
        None => fields.push(value.clone()),
    }
    Value::Array(fields).to_string()
}

impl Edit {
    fn apply(&self, cursor: &str, fixture: &Fixture) -> String {
        let encode = |text: String| URL_SAFE_NO_PAD.encode(fixture.fill(&text));
        match self {
            Edit::Keep => cursor.to_owned(),
            Edit::Text(text) => fixture.fill(text),
            Edit::Replace(at, c) => {
                let mut chars: Vec<char> = cursor.chars().collect();
                let at = at.index(chars.len().max(1));
                if at < chars.len() {
                    chars[at] = *c;
                }
                chars.into_iter().collect()
            }
            Edit::Truncate(at) => cursor[..at.index(cursor.len() + 1)].to_owned(),
            Edit::Append(text) => format!("{cursor}{}", fixture.fill(text)),
            Edit::Prefix(prefix) => format!("{prefix}{cursor}"),
            Edit::Key(value) => encode(with_field(cursor, 1, value)),
            Edit::Field(at, value) => encode(with_field(cursor, at.index(5), value)),
            Edit::Encoded(text) => encode(text.clone()),
            Edit::Plain(text) => fixture.fill(text),
        }
    }
}

#[test]
fn cursors_never_give_a_server_error() {
    // A real cursor, edited, sent to its own search (and sort) or to another one.
    let case = (
        any::<Index>(),
        edit(),
        prop::option::weighted(0.1, any::<Index>()),
        1..4u8,
    );
    property_with(
        192,
        Fixture::new,
        case,
        |fixture, (which, edit, elsewhere, count)| async move {
            let real = which.get(&fixture.cursors).clone();
            let (resource, sort) = match elsewhere {
                Some(other) => {
                    let other = other.get(&fixture.cursors);
                    (other.resource, other.sort)
                }
                None => (real.resource, real.sort),
            };
            let cursor = edit.apply(&real.value, &fixture);
            let mut params = vec![
                (
                    Sent::Text("_cursor".into()),
                    Sent::Bytes(cursor.into_bytes()),
                ),
                (Sent::Text("_count".into()), Sent::Text(count.to_string())),
            ];
            if let Some(sort) = sort {
                params.push((Sent::Text("_sort".into()), Sent::Text(sort.into())));
            }
            let path = format!("/fhir/R4/{resource}");
            let outcome = fixture
                .send("GET", &path, &fixture.query(&params), |request| request)
                .await;
            (fixture, outcome.map(drop))
        },
    );
}

/// A cursor whose position lies before PostgreSQL's first day (4714-11-24 BC, which chrono
/// goes past) was sent to the database and failed there as "out of range": a 500. It is not a
/// cursor this server made: 400, as any other.
#[tokio::test]
async fn a_cursor_before_the_databases_first_day_is_400() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let id = uuid::Uuid::new_v4();
    let before_time = -210_866_803_200_000_001_i64;
    for (resource, sort, fields) in [
        (
            "Patient",
            Some("birthdate"),
            json!(["dob", "-4714-11-23", id]),
        ),
        (
            "Patient",
            Some("-_lastUpdated"),
            json!(["-updated_at", before_time, id]),
        ),
        (
            "DocumentReference",
            None,
            json!(["documents", before_time, id]),
        ),
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(fields.to_string());
        let mut request = ApiRequest::get(&format!("/fhir/R4/{resource}"))
            .bearer(&token)
            .query("_cursor", &cursor);
        if let Some(sort) = sort {
            request = request.query("_sort", sort);
        }
        super::outcome(&app.call(request).await, 400, "invalid");
    }
}

/// Elements of each resource a body case replaces (JSON pointers into the valid resource).
const PATIENT_ELEMENTS: &[&str] = &[
    "/resourceType",
    "/id",
    "/name",
    "/name/0",
    "/name/0/text",
    "/name/0/given",
    "/name/0/given/0",
    "/name/0/family",
    "/birthDate",
    "/telecom",
    "/telecom/0/value",
    "/extension",
    "/extension/0/url",
    "/extension/0/valueString",
    "/identifier",
    "/identifier/0",
    "/identifier/0/system",
    "/identifier/0/value",
];

const DOCUMENT_ELEMENTS: &[&str] = &[
    "/resourceType",
    "/status",
    "/subject",
    "/subject/reference",
    "/content",
    "/content/0",
    "/content/0/attachment",
    "/content/0/attachment/contentType",
    "/content/0/attachment/title",
    "/content/0/attachment/size",
];

/// The element names the arbitrary bodies use, besides random ones.
const FHIR_KEYS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "name",
    "text",
    "given",
    "family",
    "birthDate",
    "telecom",
    "value",
    "system",
    "extension",
    "url",
    "valueString",
    "identifier",
    "subject",
    "reference",
    "content",
    "attachment",
    "contentType",
    "title",
    "size",
    "data",
    "status",
];

/// What a JSON string may hold written raw: lone surrogates and other escapes as a client may
/// write them (`\ud800` alone, a low one first, an escape cut short), NUL escaped and raw,
/// controls, and hostile text.
const RAW_IN_STRING: &[&str] = &[
    "\\ud800",
    "\\udfff",
    "\\udfff\\ud800",
    "\\ud800\\u0041",
    "\\udbff\\udfff",
    "\\u0000",
    "\\u202e",
    "\\uFEFF",
    "\\u",
    "\\u12",
    "\\x41",
    "\\",
    "\0",
    "\u{1}",
    "\t",
    "\u{7F}",
    "é",
    "e\u{301}",
    "\u{202E}",
    "@patient",
];

/// Whole bodies that are not a resource: empty, cut short, nested past any parser's depth,
/// numbers past f64, a byte-order mark, a key given twice.
fn odd_body() -> BoxedStrategy<String> {
    prop_oneof![
        select(
            &[
                "",
                "{",
                "[]",
                "null",
                "1e400",
                "\u{FEFF}{\"resourceType\":\"Patient\"}",
                "{\"resourceType\":\"Patient\",\"resourceType\":\"DocumentReference\"}",
                concat!(
                    "{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"A\"}],",
                    "\"birthDate\":\"1980-01-01\",\"birthDate\":null}"
                ),
            ][..]
        )
        .prop_map(str::to_owned),
        (
            select(&["[", "{\"a\":", "{\"name\":["][..]),
            select(&[100usize, 10_000][..])
        )
            .prop_map(|(open, depth)| open.repeat(depth)),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Body {
    /// Any JSON; with the route's resourceType or not.
    Any(Value, bool),
    /// The valid resource with elements replaced.
    Mutated(Vec<(Index, Value)>),
    /// The valid resource's text with raw text in one of its strings.
    Raw(Index, String),
    Odd(String),
}

/// The routes that take a body: method and path.
const WITH_BODY: &[(&str, &str)] = &[
    ("POST", "/fhir/R4/Patient"),
    ("PUT", "/fhir/R4/Patient/@patient"),
    ("POST", "/fhir/R4/DocumentReference"),
];

fn element_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => long_text().prop_map(Value::from),
        2 => json_value_with(FHIR_KEYS),
        1 => select(&[i64::MAX, i64::MIN, -1, 0, 5_368_709_121][..]).prop_map(Value::from),
        1 => select(&[1e300, -0.0, 1.5, 5.0e9][..]).prop_map(Value::from),
        1 => Just(Value::Null),
    ]
    .boxed()
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => (json_value_with(FHIR_KEYS), any::<bool>())
            .prop_map(|(v, typed)| Body::Any(v, typed)),
        4 => prop::collection::vec((any::<Index>(), element_value()), 1..4)
            .prop_map(Body::Mutated),
        2 => (
            any::<Index>(),
            prop::collection::vec(select(RAW_IN_STRING), 1..6).prop_map(|p| p.concat()),
        )
            .prop_map(|(at, raw)| Body::Raw(at, raw)),
        1 => odd_body().prop_map(Body::Odd),
    ]
}

impl Body {
    /// The body's text for a request to `path`.
    fn text(&self, path: &str, fixture: &Fixture) -> String {
        let patient = path.contains("Patient");
        let (mut valid, elements) = if patient {
            (valid_patient(), PATIENT_ELEMENTS)
        } else {
            (valid_document(), DOCUMENT_ELEMENTS)
        };
        let text = match self {
            Body::Any(value, typed) => {
                let mut value = value.clone();
                if let (Some(object), true) = (value.as_object_mut(), typed) {
                    object.insert("resourceType".into(), valid["resourceType"].clone());
                    object.insert("id".into(), json!("@patient"));
                }
                value.to_string()
            }
            Body::Mutated(changes) => {
                for (at, value) in changes {
                    if let Some(element) = valid.pointer_mut(at.get::<&str>(elements)) {
                        *element = value.clone();
                    }
                }
                valid.to_string()
            }
            // Written into the string value of the element at the index (where there is one).
            Body::Raw(at, raw) => {
                let text = valid.to_string();
                let strings: Vec<usize> = text.match_indices("\":\"").map(|(i, _)| i + 3).collect();
                let at = strings[at.index(strings.len())];
                format!("{}{raw}{}", &text[..at], &text[at..])
            }
            Body::Odd(text) => text.clone(),
        };
        fixture.fill(&text)
    }
}

#[test]
fn bodies_never_give_a_server_error() {
    let content_type = prop_oneof![
        6 => Just("application/fhir+json"),
        1 => select(&[
            "application/json",
            "application/fhir+json; charset=utf-8",
            "text/plain",
            "application/fhir+xml",
            "",
        ][..]),
    ];
    let case = (select(WITH_BODY), body(), content_type);
    property_with(
        192,
        Fixture::new,
        case,
        |fixture, ((method, path), body, content_type)| async move {
            let path = fixture.fill(path);
            let text = body.text(&path, &fixture);
            let outcome = fixture
                .send(method, &path, "", |request| {
                    request.raw_body(content_type, &text)
                })
                .await;
            (fixture, outcome.map(drop))
        },
    );
}
