//! Patients as stored and answered, and the validated values a request may carry.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize, Serializer};
use tokio_postgres::Row;
use uuid::Uuid;

/// `{id, name, dob, contact_info, medical_history, identifiers, created_at, updated_at}`.
#[derive(Debug, Serialize)]
pub struct Patient {
    pub id: Uuid,
    pub name: String,
    #[serde(serialize_with = "dob_as_datetime")]
    pub dob: Option<NaiveDate>,
    pub contact_info: Option<String>,
    pub medical_history: Option<String>,
    /// From their own table, in the row's statement (`identifiers_column`); ordered by system
    /// and value.
    pub identifiers: Vec<Identifier>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub version: i64,
}

/// The columns `Patient::from_row` reads, in order.
pub const PATIENT_COLUMNS: &str =
    "id, name, dob, contact_info, medical_history, created_at, updated_at, version";

/// The identifiers of the patient row `relation`, as one JSON column named `identifiers`
/// (NULL when none), in `Identifiers`' order: read in the same statement as the row.
pub fn identifiers_column(relation: &str) -> String {
    format!(
        "(SELECT jsonb_agg(jsonb_build_object('system', i.system, 'value', i.value)
                ORDER BY i.system COLLATE \"C\", i.value COLLATE \"C\")
          FROM patient_identifiers i WHERE i.patient_id = {relation}.id) AS identifiers"
    )
}

impl Patient {
    /// A row of `PATIENT_COLUMNS`, with its identifiers when the statement read them
    /// (`identifiers_column`).
    pub fn from_row(row: &Row) -> Self {
        let identifiers = row
            .columns()
            .iter()
            .position(|c| c.name() == "identifiers")
            .and_then(|at| row.get::<_, Option<serde_json::Value>>(at))
            .and_then(|list| serde_json::from_value(list).ok())
            .unwrap_or_default();
        Self {
            id: row.get(0),
            name: row.get(1),
            dob: row.get(2),
            contact_info: row.get(3),
            medical_history: row.get(4),
            identifiers,
            created_at: row.get(5),
            updated_at: row.get(6),
            version: row.get(7),
        }
    }

    /// The strong validator of this version of the record.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// A business identifier: a system (an absolute URI, such as a clinic's MRN namespace) and a
/// value, each 1 to 255 characters without control characters (the value trimmed). A pair
/// names at most one patient.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawIdentifier")]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

#[derive(Deserialize)]
struct RawIdentifier {
    system: String,
    value: String,
}

impl TryFrom<RawIdentifier> for Identifier {
    type Error = String;
    fn try_from(raw: RawIdentifier) -> Result<Self, String> {
        Identifier::new(&raw.system, &raw.value)
    }
}

impl Identifier {
    pub fn new(system: &str, value: &str) -> Result<Self, String> {
        let (system, value) = (system.trim(), value.trim());
        let printable = |s: &str| !s.chars().any(char::is_control);
        if system.is_empty() || system.chars().count() > 255 || !printable(system) {
            return Err("An identifier's system must be 1 to 255 characters".into());
        }
        // An absolute URI: a scheme (a letter, then letters, digits, + - .), a colon, no spaces.
        let scheme = system.split_once(':').map(|(scheme, _)| scheme);
        let absolute = scheme.is_some_and(|s| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }) && !system.contains(char::is_whitespace);
        if !absolute {
            return Err(
                "An identifier's system must be an absolute URI (such as urn:oid:1.2.3 or https://clinic.example/mrn)"
                    .into(),
            );
        }
        if value.is_empty() || value.chars().count() > 255 || !printable(value) {
            return Err("An identifier's value must be 1 to 255 characters".into());
        }
        Ok(Self {
            system: system.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// A patient's identifiers as sent: at most `MAX_IDENTIFIERS`, no pair twice.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<Identifier>")]
pub struct Identifiers(Vec<Identifier>);

pub const MAX_IDENTIFIERS: usize = 20;

impl TryFrom<Vec<Identifier>> for Identifiers {
    type Error = String;
    fn try_from(mut list: Vec<Identifier>) -> Result<Self, String> {
        if list.len() > MAX_IDENTIFIERS {
            return Err(format!(
                "A patient has at most {MAX_IDENTIFIERS} identifiers"
            ));
        }
        list.sort();
        if list.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("The same identifier is listed twice".into());
        }
        Ok(Self(list))
    }
}

impl Identifiers {
    pub fn as_slice(&self) -> &[Identifier] {
        &self.0
    }

    /// Systems and values, as two arrays for `unnest`.
    pub fn columns(&self) -> (Vec<String>, Vec<String>) {
        self.0
            .iter()
            .map(|i| (i.system.clone(), i.value.clone()))
            .unzip()
    }
}

/// The system we replace answered dates of birth as naive date-times: `2000-01-01T00:00:00`.
fn dob_as_datetime<S: Serializer>(
    dob: &Option<NaiveDate>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match dob {
        Some(date) => serializer.serialize_str(&format!("{}T00:00:00", date.format("%Y-%m-%d"))),
        None => serializer.serialize_none(),
    }
}

/// A patient's name: at most 255 characters as sent (the document's maxLength), and at least one
/// once surrounding space is trimmed (stored trimmed).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct PatientName(String);

impl TryFrom<String> for PatientName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        if raw.chars().count() > 255 {
            return Err("String should have at most 255 characters".into());
        }
        match raw.trim() {
            "" => Err("String should have at least 1 character".into()),
            trimmed => Ok(Self(trimmed.to_owned())),
        }
    }
}

impl PatientName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Text of bounded length: `BoundedText<255>` for contact info, `<100_000>` for a history.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct BoundedText<const MAX: usize>(String);

impl<const MAX: usize> TryFrom<String> for BoundedText<MAX> {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        if raw.chars().count() > MAX {
            return Err(format!("String should have at most {MAX} characters"));
        }
        Ok(Self(raw))
    }
}

impl<const MAX: usize> BoundedText<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub type ContactInfo = BoundedText<255>;
pub type MedicalHistory = BoundedText<100_000>;

/// A date of birth: `YYYY-MM-DD` or a date-time (its date is kept), from 1900-01-01 to today.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct Dob(pub NaiveDate);

pub const EARLIEST_DOB: NaiveDate = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(date) => date,
    None => panic!("1900-01-01 is a date"),
};

/// Parses `YYYY-MM-DD`, optionally followed by `T` or a space and a time (with or without offset).
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    let raw = raw.trim();
    let date_part = raw.get(..10)?;
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d").ok()?;
    let rest = &raw[10..];
    if rest.is_empty() {
        return Some(date);
    }
    // The time must be a real one; its date is what counts. (The separator is ASCII, so
    // slicing after it is on a character boundary.)
    if !rest.starts_with(['T', 't', ' ']) {
        return None;
    }
    let full = format!("{date_part}T{}", &rest[1..]);
    let valid_time = DateTime::parse_from_rfc3339(&full).is_ok()
        || chrono::NaiveDateTime::parse_from_str(&full, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        || chrono::NaiveDateTime::parse_from_str(&full, "%Y-%m-%dT%H:%M").is_ok();
    valid_time.then_some(date)
}

impl TryFrom<String> for Dob {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        let date = parse_date(&raw).ok_or(
            "Input should be a valid date or datetime (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)",
        )?;
        if date < EARLIEST_DOB {
            return Err("Date of birth must not be before 1900-01-01".into());
        }
        if date > Utc::now().date_naive() {
            return Err("Date of birth must not be in the future".into());
        }
        Ok(Self(date))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_date_times() {
        let d = NaiveDate::from_ymd_opt(2000, 1, 31).unwrap();
        for ok in [
            "2000-01-31",
            "2000-01-31T00:00:00",
            "2000-01-31T10:20:30.123Z",
            "2000-01-31T10:20:30+02:00",
            "2000-01-31 10:20",
        ] {
            assert_eq!(parse_date(ok), Some(d), "{ok}");
        }
        for bad in [
            "",
            "2000-13-01",
            "2000-02-30",
            "31/01/2000",
            "2000-01-31T99:00:00",
            "2000-01-31X",
            "20000-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        assert!(Identifier::new("urn:oid:1.2.3", " 42 ").is_ok_and(|i| i.value == "42"));
        assert!(Identifier::new("https://clinic.example/mrn", "A-1").is_ok());
        for (system, value) in [
            ("mrn", "1"),
            ("1urn:x", "1"),
            ("urn:a b", "1"),
            ("urn:x", " "),
            ("urn:x", "a\u{0}b"),
        ] {
            assert!(Identifier::new(system, value).is_err(), "{system} {value}");
        }
        let twice = vec![
            Identifier::new("urn:x", "1").unwrap(),
            Identifier::new("urn:x", "1").unwrap(),
        ];
        assert!(Identifiers::try_from(twice).is_err());
    }

    #[test]
    fn dob_bounds() {
        assert!(Dob::try_from("1899-12-31".to_owned()).is_err());
        assert!(Dob::try_from("1900-01-01".to_owned()).is_ok());
        assert!(Dob::try_from("2999-01-01".to_owned()).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            PatientName::try_from("  Ann  ".to_owned())
                .unwrap()
                .as_str(),
            "Ann"
        );
        assert!(PatientName::try_from("   ".to_owned()).is_err());
        assert!(PatientName::try_from("é".repeat(255)).is_ok());
        // The limit counts what was sent, as the document's maxLength does.
        assert!(PatientName::try_from(format!("\t{}", "*".repeat(255))).is_err());
        assert!(PatientName::try_from("é".repeat(256)).is_err());
    }
}
