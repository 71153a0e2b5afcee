//! The parsers of a search's text as the fuzz targets (`fuzz/`, run by `scripts/fuzz`) and the
//! property tests below reach them, each with its defining property as a check that panics
//! when the property does not hold: dates and instants, the query string, tokens and references
//! as the searches read them, and cursors. Never called while serving.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use domain::paging::{Cursor, Keyset, List, SortValue};
use domain::patients::search::Sort;

use crate::query;

/// `date_value`: a date covers whole days of one year, its first no later than its last, and
/// `YYYY-MM-DD` is that one day.
pub fn check_date(raw: &str) {
    let Ok(date) = query::date_value(raw) else {
        return;
    };
    assert!(date.first <= date.last, "{raw:?}: {date:?}");
    assert_eq!(date.first.year(), date.last.year(), "{raw:?}: {date:?}");
    if let Ok(day) = without_prefix(raw).parse() {
        assert_eq!((date.first, date.last), (day, day), "{raw:?}");
    }
    let _ = date.bounds();
}

/// `instant_value`: the range is not empty and holds the instant written (an RFC 3339 time:
/// that instant; a date alone: its first moment).
pub fn check_instant(raw: &str) {
    let Ok(instant) = query::instant_value(raw) else {
        return;
    };
    assert!(instant.start < instant.end, "{raw:?}: {instant:?}");
    if let Ok(at) = DateTime::parse_from_rfc3339(without_prefix(raw)) {
        let at = at.with_timezone(&Utc);
        assert!(
            instant.start <= at && at < instant.end,
            "{raw:?}: {at} is not in {instant:?}"
        );
    }
    if !raw.contains('T') {
        let date = query::date_value(raw).expect("a date alone is a date");
        assert_eq!(instant.start, date.first.and_time(NaiveTime::MIN).and_utc());
    }
    let _ = instant.range();
}

/// The value of a date or instant parameter without its prefix (`ge`, `sa`...).
fn without_prefix(raw: &str) -> &str {
    let raw = raw.trim();
    ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]
        .iter()
        .find_map(|prefix| raw.strip_prefix(prefix))
        .unwrap_or(raw)
}

/// `params`: a name holds no `:` (the first one starts the modifier), and the parameters
/// written out again read back the same.
pub fn check_query(raw: &str) {
    let params = query::params(Some(raw));
    let mut again = form_urlencoded::Serializer::new(String::new());
    for param in &params {
        assert!(!param.name.contains(':'), "{raw:?}: {param:?}");
        let name = match &param.modifier {
            Some(modifier) => format!("{}:{modifier}", param.name),
            None => param.name.clone(),
        };
        again.append_pair(&name, &param.value);
    }
    assert_eq!(query::params(Some(&again.finish())), params, "{raw:?}");
}

/// The query string `raw` as a Patient search (its SQL written too) and an AuditEvent search
/// read it: tokens (`identifier`, `agent`), references, ids, dates and codes give a search or a
/// refusal, never a panic; each value as a DocumentReference's `patient` as `check_reference`.
pub fn check_search(raw: &str) {
    let params = query::params(Some(raw));
    if let Ok((search, _)) = crate::patient::search_of(&params) {
        let _ = search.statement("p.id");
        let _ = search.estimate_sql();
    }
    for param in &params {
        let _ = crate::audit_event::filter_of(param);
        check_reference(&param.value);
    }
}

/// `patient_reference`: a reference it takes names its id last, after nothing or a path
/// ending in `Patient`.
pub fn check_reference(raw: &str) {
    let Ok(id) = crate::document::patient_reference(raw) else {
        return;
    };
    if !id.is_nil() {
        let (before, last) = raw.trim().rsplit_once('/').unwrap_or(("", raw.trim()));
        assert_eq!(uuid::Uuid::parse_str(last).ok(), Some(id), "{raw:?}");
        let before = before.trim_end_matches('/');
        assert!(before.is_empty() || before.ends_with("Patient"), "{raw:?}");
    }
}

/// Every list that pages by cursor.
pub const LISTS: [List; 10] = [
    List::AuditEvents,
    List::Documents,
    List::Patients(Sort::Name),
    List::Patients(Sort::NameDesc),
    List::Patients(Sort::Dob),
    List::Patients(Sort::DobDesc),
    List::Patients(Sort::CreatedAt),
    List::Patients(Sort::CreatedAtDesc),
    List::Patients(Sort::UpdatedAt),
    List::Patients(Sort::UpdatedAtDesc),
];

/// `Cursor::decode` for every list: a cursor it takes names a position PostgreSQL can hold
/// (from 4714-11-24 BC on, chrono's year -4713), and encodes to one that decodes to it again.
pub fn check_cursor(raw: &str) {
    let first_day = NaiveDate::from_ymd_opt(-4713, 11, 24).expect("a day");
    for list in LISTS {
        if let Ok(cursor) = Cursor::decode(raw, list) {
            let day = match &cursor.position().key {
                SortValue::Time(at) => Some(at.date_naive()),
                SortValue::Date(day) => *day,
                SortValue::Text(_) => None,
            };
            assert!(
                day.is_none_or(|day| day >= first_day),
                "{raw:?}: {cursor:?}"
            );
            assert_eq!(
                Cursor::decode(&cursor.encode(), list).ok().as_ref(),
                Some(&cursor),
                "{raw:?}"
            );
        }
        let _ = Keyset::of(list, Some(raw));
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use proptest::prelude::*;

    use super::*;

    /// Text near what each parser takes: its own alphabet, with any character now and then.
    fn near(alphabet: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::collection::vec(
                prop_oneof![
                    6 => prop::sample::select(alphabet.chars().collect::<Vec<_>>()),
                    1 => any::<char>(),
                ],
                0..40,
            )
            .prop_map(|chars| chars.into_iter().collect()),
            1 => any::<String>(),
        ]
    }

    const DATE: &str = concat!(
        "(eq|ne|gt|lt|ge|le|sa|eb|ap)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}",
        "(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,12})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
    );

    proptest! {
        // A fixed seed, as tests/api/generated.rs has: CI runs the same cases every time.
        #![proptest_config(ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(7),
            ..ProptestConfig::default()
        })]

        #[test]
        fn dates_and_instants_cover_what_they_name(
            raw in prop_oneof![DATE, near("0123456789-T:.+Zzeqnglta \u{3000}é")],
        ) {
            check_date(&raw);
            check_instant(&raw);
        }

        #[test]
        fn a_query_string_reads_back_as_written(
            raw in near("ab_:=&%2F3Ac+é,|.-"),
            bytes in prop::collection::vec(any::<u8>(), 0..12),
        ) {
            check_query(&raw);
            // Percent-encoded bytes, invalid UTF-8 too.
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            check_query(&format!("name={encoded}&{encoded}:{encoded}={raw}"));
        }

        #[test]
        fn tokens_and_references_give_a_search_or_a_refusal(
            name in prop::sample::select(&[
                "identifier", "_id", "name", "name:exact", "birthdate", "_lastUpdated", "_sort",
                "_count", "_total", "patient", "agent", "action", "outcome", "date", "x",
            ][..]),
            value in prop_oneof![
                DATE,
                near("urn:oid:1.2|/Patient,abcdef0123456789-{}"),
                "(|https://carevault.dev/fhir/sid/user-id\\|)?[0-9a-f-]{32,36}",
            ],
        ) {
            let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            check_search(&format!("{name}={encoded}"));
        }

        #[test]
        fn a_patient_reference_names_its_id(
            prefix in prop::sample::select(&[
                "", "Patient/", " Patient/", "https://x.test/fhir/R4/Patient/", "Patient//",
            ][..]),
            id in any::<u128>(),
            form in 0..3usize,
            other in near("Patient/abcdef0123456789-"),
        ) {
            let id = uuid::Uuid::from_u128(id);
            let written = match form {
                0 => id.hyphenated().to_string(),
                1 => id.simple().to_string(),
                _ => id.braced().to_string(),
            };
            let reference = format!("{prefix}{written}");
            prop_assert_eq!(crate::document::patient_reference(&reference).ok(), Some(id));
            check_reference(&reference);
            check_reference(&other);
        }

        #[test]
        fn cursors_decode_to_what_was_encoded_and_nothing_else_panics(
            raw in near("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."),
            json in near("[]\",-0123456789abcdefdocumentsaudit_eventsnameob{}:. "),
        ) {
            check_cursor(&raw);
            check_cursor(&URL_SAFE_NO_PAD.encode(&json));
            check_cursor(&format!("prev.{raw}"));
        }
    }
}
