//! Paging and counting, one way for every list: `Count` (exact, the planner's estimate, or
//! none), `TimeRange` (a time filter's bounds), and for every list paged by position (patients
//! under each sort, attachments, audit events; through either interface) `Keyset` with its one
//! opaque `Cursor`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use shared::db::SqlParams;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::patients::search::Sort;

/// How a list counts its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Every match counted.
    Exact,
    /// The planner's estimate (`EXPLAIN`): no matter how many match, one plan's cost.
    Estimate,
    None,
}

/// The count of the rows `from_where` (`FROM <table> WHERE ...`, over `params`) selects, as
/// `count` asks. `params` may hold more than the statement uses (a page's): they are typed.
pub async fn count(
    client: &tokio_postgres::Client,
    count: Count,
    from_where: &str,
    params: &SqlParams,
) -> Result<Option<i64>, tokio_postgres::Error> {
    Ok(match count {
        Count::Exact => Some(
            client
                .query_typed_one(&format!("SELECT count(*) {from_where}"), &params.typed())
                .await?
                .get(0),
        ),
        Count::Estimate => {
            let plan = client
                .query_typed_one(
                    &format!("EXPLAIN (FORMAT JSON) SELECT 1 {from_where}"),
                    &params.typed(),
                )
                .await?;
            shared::db::plan_rows(&plan.get::<_, serde_json::Value>(0))
        }
        Count::None => None,
    })
}

/// One page's rows (`page_sql`) and the count of what `from_where` selects, on one pooled
/// connection in one round trip; both statements take `params` (the count uses a prefix).
pub async fn page_and_count(
    pool: &shared::db::DbPool,
    page_sql: &str,
    from_where: &str,
    params: &SqlParams,
    how: Count,
) -> Result<(Vec<tokio_postgres::Row>, Option<i64>), shared::StoreError> {
    let client = pool.get().await?;
    let typed = params.typed();
    Ok(tokio::try_join!(
        client.query_typed(page_sql, &typed),
        count(&client, how, from_where, params),
    )?)
}

/// The bounds of a time filter: at or after `from`, before `before`; `outside` matches what
/// lies outside both bounds instead (FHIR's `ne`; it needs both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub outside: bool,
}

impl TimeRange {
    /// The condition on the timestamptz `column`, its bounds pushed onto `params`.
    pub fn condition(&self, column: &str, params: &mut SqlParams) -> String {
        let from = self.from.map(|at| params.push(at, Type::TIMESTAMPTZ));
        let before = self.before.map(|at| params.push(at, Type::TIMESTAMPTZ));
        match (self.outside, from, before) {
            (true, Some(from), Some(before)) => {
                format!("({column} < {from} OR {column} >= {before})")
            }
            (_, None, None) => "true".to_owned(),
            (_, from, before) => from
                .map(|f| format!("{column} >= {f}"))
                .into_iter()
                .chain(before.map(|b| format!("{column} < {b}")))
                .collect::<Vec<_>>()
                .join(" AND "),
        }
    }
}

/// The value of a list's sort column at one row.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Time(DateTime<Utc>),
    Text(String),
    /// A date, or none (a date of birth may be missing).
    Date(Option<NaiveDate>),
}

impl SortValue {
    /// The value as a statement parameter; None for a missing date (SQL has no value to
    /// compare it with: NULLs sort apart).
    pub fn push(&self, params: &mut SqlParams) -> Option<String> {
        match self {
            Self::Time(at) => Some(params.push(*at, Type::TIMESTAMPTZ)),
            Self::Text(text) => Some(params.push(text.clone(), Type::TEXT)),
            Self::Date(Some(date)) => Some(params.push(*date, Type::DATE)),
            Self::Date(None) => None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Time(at) => json!(at.timestamp_micros()),
            Self::Text(text) => json!(text),
            Self::Date(date) => json!(date),
        }
    }
}

/// What kind of value a list sorts on (and so what a cursor of that list must carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Time,
    Text,
    /// A date that may be missing.
    Date,
}

impl SortKind {
    fn value_of(self, json: &serde_json::Value) -> Option<SortValue> {
        Some(match self {
            Self::Time => SortValue::Time(stored_instant(json.as_i64()?)?),
            Self::Text => SortValue::Text(json.as_str()?.to_owned()),
            Self::Date => SortValue::Date(match json {
                serde_json::Value::Null => None,
                other => Some(other.as_str()?.parse().ok().filter(storable)?),
            }),
        })
    }
}

/// Whether PostgreSQL's `date` and `timestamptz` hold `day`: from 4714-11-24 BC (Julian day 0,
/// chrono's year -4713) on; chrono's last day comes before theirs. A cursor's position is a
/// row's, so one they cannot hold is not a position this server made (sent as a parameter, it
/// would be the database's "out of range" error, a 500).
fn storable(day: &NaiveDate) -> bool {
    NaiveDate::from_ymd_opt(-4713, 11, 24).is_some_and(|first| *day >= first)
}

/// The instant `micros` after the Unix epoch, when PostgreSQL's `timestamptz` holds it.
fn stored_instant(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).filter(|at| storable(&at.date_naive()))
}

/// A row's place in its list's order: its sort value and its id (the tie-break).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub key: SortValue,
    pub id: Uuid,
}

impl Position {
    /// A row's place in a list ordered by a time (the newest-first lists).
    pub fn at(at: DateTime<Utc>, id: Uuid) -> Self {
        Self {
            key: SortValue::Time(at),
            id,
        }
    }
}

/// A cursor that this server did not make for this list (or that names no position).
#[derive(Debug, thiserror::Error)]
#[error("not a cursor of this list")]
pub struct BadCursor;

/// The lists that page by cursor, each in one order. A cursor names its list and order, and
/// every other refuses it (it would otherwise read as a position there and answer a wrong page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// The audit trail (`/audit-events/`, AuditEvent), newest first.
    AuditEvents,
    /// Attachments (DocumentReference), newest first.
    Documents,
    /// Patient groups (Group), newest first.
    Groups,
    /// Patients (`/patients/`, Patient) in one of their sorts.
    Patients(Sort),
}

impl List {
    /// The name a cursor carries. A patient sort's is the `sort` parameter's value, as in the
    /// cursors handed out before every list had this format.
    fn tag(self) -> &'static str {
        match self {
            Self::AuditEvents => "audit_events",
            Self::Documents => "documents",
            Self::Groups => "groups",
            Self::Patients(sort) => sort.as_str(),
        }
    }

    fn sort_kind(self) -> SortKind {
        match self {
            Self::AuditEvents | Self::Documents | Self::Groups => SortKind::Time,
            Self::Patients(sort) => sort.kind(),
        }
    }

    fn descending(self) -> bool {
        match self {
            Self::AuditEvents | Self::Documents | Self::Groups => true,
            Self::Patients(sort) => sort.descending(),
        }
    }
}

/// The prefix the previous-page cursors of FHIR searches carried before a cursor said its own
/// direction; they are still read.
const LEGACY_PREVIOUS: &str = "prev.";

/// Where a page starts: the rows after a position in its list's order (the next page), or
/// before it (the previous page). Opaque to clients: base64url of the JSON
/// `[<list>, <sort value>, <id>]`, with `"before"` appended for a previous page.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    list: List,
    position: Position,
    backwards: bool,
}

impl Cursor {
    /// The rows after `position` in `list`.
    pub fn after(list: List, position: Position) -> Self {
        Self {
            list,
            position,
            backwards: false,
        }
    }

    /// The rows before `position` in `list`.
    pub fn before(list: List, position: Position) -> Self {
        Self {
            backwards: true,
            ..Self::after(list, position)
        }
    }

    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Whether the page is read towards the top (a previous page).
    pub fn is_backwards(&self) -> bool {
        self.backwards
    }

    pub fn encode(&self) -> String {
        let mut fields = vec![
            json!(self.list.tag()),
            self.position.key.to_json(),
            json!(self.position.id),
        ];
        if self.backwards {
            fields.push(json!("before"));
        }
        URL_SAFE_NO_PAD.encode(serde_json::Value::Array(fields).to_string())
    }

    /// The cursor `encode` made for `list`. The newest-first lists' cursors handed out before
    /// every list had one format (base64url of `[d|]<µs>|<id>[|before]`, DocumentReference's
    /// plain `<µs>_<id>`, and `prev.` in front of a FHIR previous page's) name the same rows.
    pub fn decode(raw: &str, list: List) -> Result<Self, BadCursor> {
        let raw = raw.trim();
        let (raw, legacy_backwards) = match raw.strip_prefix(LEGACY_PREVIOUS) {
            Some(rest) => (rest, true),
            None => (raw, false),
        };
        let cursor = Self::decode_json(raw, list)
            .or_else(|| Self::decode_legacy(raw, list))
            .ok_or(BadCursor)?;
        Ok(Self {
            backwards: cursor.backwards || legacy_backwards,
            ..cursor
        })
    }

    fn decode_json(raw: &str, list: List) -> Option<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let (tag, key, id, backwards) = match value.as_array()?.as_slice() {
            [tag, key, id] => (tag, key, id, false),
            [tag, key, id, direction] if direction == "before" => (tag, key, id, true),
            _ => return None,
        };
        (tag.as_str()? == list.tag()).then_some(())?;
        Some(Self {
            list,
            position: Position {
                key: list.sort_kind().value_of(key)?,
                id: Uuid::parse_str(id.as_str()?).ok()?,
            },
            backwards,
        })
    }

    fn decode_legacy(raw: &str, list: List) -> Option<Self> {
        let tag = match list {
            List::AuditEvents => None,
            List::Documents => Some("d"),
            List::Patients(_) | List::Groups => return None,
        };
        let position = |micros: &str, id: &str| {
            Some(Position::at(
                stored_instant(micros.parse().ok()?)?,
                Uuid::parse_str(id).ok()?,
            ))
        };
        let tagged = || {
            let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
            let mut parts: Vec<&str> = text.split('|').collect();
            if let Some(tag) = tag {
                (parts.first() == Some(&tag)).then(|| parts.remove(0))?;
            }
            match parts.as_slice() {
                [micros, id] => Some((position(micros, id)?, false)),
                [micros, id, "before"] => Some((position(micros, id)?, true)),
                _ => None,
            }
        };
        // DocumentReference's first format: plain `<µs>_<id>`.
        let plain = || {
            let (micros, id) = raw.split_once('_')?;
            (list == List::Documents).then_some((position(micros, id)?, false))
        };
        let (position, backwards) = tagged().or_else(plain)?;
        Some(Self {
            list,
            position,
            backwards,
        })
    }
}

/// Where a page of a list starts: at the top, or at a cursor of that list.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyset {
    list: List,
    cursor: Option<Cursor>,
}

impl Keyset {
    /// The top of `list`.
    pub fn first(list: List) -> Self {
        Self { list, cursor: None }
    }

    /// The keyset a cursor of `list` names; `None` is the top.
    pub fn of(list: List, cursor: Option<&str>) -> Result<Self, BadCursor> {
        Ok(Self {
            list,
            cursor: cursor.map(|raw| Cursor::decode(raw, list)).transpose()?,
        })
    }

    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    /// Whether the page is read towards the top (a previous page).
    pub fn is_backwards(&self) -> bool {
        self.cursor.as_ref().is_some_and(Cursor::is_backwards)
    }

    /// Whether the rows are read in descending order: the list's order, turned round for a
    /// previous page.
    pub fn reads_descending(&self) -> bool {
        self.list.descending() != self.is_backwards()
    }

    /// The condition for the rows past the cursor in reading order, over the sort column
    /// `key` and the id column `id` (None at the top). PostgreSQL's order, which its indexes
    /// keep: NULLs (only a missing date) last ascending and first descending.
    pub fn condition(&self, key: &str, id: &str, params: &mut SqlParams) -> Option<String> {
        let cursor = self.cursor.as_ref()?;
        let value = cursor.position.key.push(params);
        let after = params.push(cursor.position.id, Type::UUID);
        let nullable = self.list.sort_kind() == SortKind::Date;
        Some(match (self.reads_descending(), value) {
            (false, None) => format!("({key} IS NULL AND {id} > {after})"),
            (false, Some(value)) if nullable => {
                format!("(({key}, {id}) > ({value}, {after}) OR {key} IS NULL)")
            }
            (false, Some(value)) => format!("({key}, {id}) > ({value}, {after})"),
            (true, None) => format!("(({key} IS NULL AND {id} < {after}) OR {key} IS NOT NULL)"),
            (true, Some(value)) => format!("({key}, {id}) < ({value}, {after})"),
        })
    }

    /// The `ORDER BY` of the rows as read, over the columns `key` and `id`.
    pub fn order_by(&self, key: &str, id: &str) -> String {
        let direction = if self.reads_descending() { " DESC" } else { "" };
        format!("{key}{direction}, {id}{direction}")
    }

    /// The page of `limit` rows, in the list's order, out of the `limit + 1` read in reading
    /// order, and the (previous, next) cursors around it.
    pub fn page<T>(
        &self,
        rows: &mut Vec<T>,
        limit: i64,
        position: impl Fn(&T) -> Position,
    ) -> (Option<String>, Option<String>) {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let backwards = self.is_backwards();
        let (earlier, later) = if backwards {
            rows.reverse();
            (more, !rows.is_empty())
        } else {
            (self.cursor.is_some(), more)
        };
        (
            rows.first()
                .filter(|_| earlier)
                .map(|first| Cursor::before(self.list, position(first)).encode()),
            rows.last()
                .filter(|_| later)
                .map(|last| Cursor::after(self.list, position(last)).encode()),
        )
    }
}

/// A page of a list: its items, the cursors around it (for keyset lists), and its count as
/// asked.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub previous: Option<String>,
    pub next: Option<String>,
    pub total: Option<i64>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: &str = "6f1c1f4e-2a47-4d8e-9a8e-0d7c3c1e2b10";
    const MICROS: i64 = 1_700_000_000_123_456;

    fn position() -> Position {
        Position::at(
            DateTime::from_timestamp_micros(MICROS).unwrap(),
            Uuid::parse_str(ID).unwrap(),
        )
    }

    fn at(list: List, backwards: bool) -> Cursor {
        Cursor {
            list,
            position: position(),
            backwards,
        }
    }

    const NEWEST_FIRST: [List; 2] = [List::AuditEvents, List::Documents];

    #[test]
    fn a_cursor_names_its_list_position_and_direction() {
        for list in NEWEST_FIRST {
            for backwards in [false, true] {
                let cursor = at(list, backwards).encode();
                assert_eq!(Cursor::decode(&cursor, list).unwrap(), at(list, backwards));
            }
        }
        let patients = List::Patients(Sort::DobDesc);
        for key in [
            SortValue::Date(None),
            SortValue::Date(NaiveDate::from_ymd_opt(1980, 2, 29)),
        ] {
            let cursor = Cursor::before(
                patients,
                Position {
                    key,
                    id: Uuid::parse_str(ID).unwrap(),
                },
            );
            assert_eq!(Cursor::decode(&cursor.encode(), patients).unwrap(), cursor);
        }
    }

    #[test]
    fn a_cursor_of_another_list_or_sort_is_refused() {
        let lists = [
            List::AuditEvents,
            List::Documents,
            List::Patients(Sort::CreatedAt),
            List::Patients(Sort::CreatedAtDesc),
        ];
        for made_for in lists {
            for asked in lists.into_iter().filter(|l| *l != made_for) {
                assert!(Cursor::decode(&at(made_for, false).encode(), asked).is_err());
            }
        }
        // A cursor carries the value its list sorts on.
        let by_name = Cursor::after(
            List::Patients(Sort::Name),
            Position {
                key: SortValue::Text("Ada".into()),
                id: Uuid::parse_str(ID).unwrap(),
            },
        );
        assert!(Cursor::decode(&by_name.encode(), List::Patients(Sort::Name)).is_ok());
        assert!(Cursor::decode(&by_name.encode(), List::Patients(Sort::Dob)).is_err());
    }

    #[test]
    fn cursors_of_the_earlier_formats_name_the_same_rows() {
        let encode = |text: String| URL_SAFE_NO_PAD.encode(text);
        let audit = encode(format!("{MICROS}|{ID}"));
        let document = format!("{MICROS}_{ID}");
        let (events, documents) = (List::AuditEvents, List::Documents);
        assert_eq!(Cursor::decode(&audit, events).unwrap(), at(events, false));
        assert_eq!(
            Cursor::decode(&encode(format!("{MICROS}|{ID}|before")), events).unwrap(),
            at(events, true)
        );
        assert_eq!(
            Cursor::decode(&encode(format!("d|{MICROS}|{ID}|before")), documents).unwrap(),
            at(documents, true)
        );
        assert_eq!(
            Cursor::decode(&document, documents).unwrap(),
            at(documents, false)
        );
        assert_eq!(
            Cursor::decode(&format!("prev.{audit}"), events).unwrap(),
            at(events, true)
        );
        assert_eq!(
            Cursor::decode(&format!("prev.{document}"), documents).unwrap(),
            at(documents, true)
        );
        // The plain form was only ever DocumentReference's, the tagged one never the trail's.
        assert!(Cursor::decode(&document, events).is_err());
        assert!(Cursor::decode(&encode(format!("d|{MICROS}|{ID}")), events).is_err());
        // A patient cursor as the JSON API wrote them, and a FHIR previous page's.
        let patients = List::Patients(Sort::CreatedAt);
        let patient = encode(format!(r#"["created_at",{MICROS},"{ID}"]"#));
        assert_eq!(
            Cursor::decode(&patient, patients).unwrap(),
            at(patients, false)
        );
        assert_eq!(
            Cursor::decode(&format!("prev.{patient}"), patients).unwrap(),
            at(patients, true)
        );
        assert_eq!(at(patients, false).encode(), patient);
    }

    #[test]
    fn anything_else_is_refused() {
        let encode = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for raw in [
            "",
            "prev.",
            "x",
            "12_not-a-uuid",
            &format!("é_{ID}"),
            &format!("99999999999999999999_{ID}"),
            &encode(&format!("1|{ID}|after")),
            &encode("1|2|3|4"),
            &encode(&format!(r#"["audit_events",1,"{ID}","after"]"#)),
            &encode(&format!(r#"["audit_events","1","{ID}"]"#)),
            &encode(r#"["audit_events",1,"not-a-uuid"]"#),
            &encode(r#"{"list":"audit_events"}"#),
        ] {
            for list in NEWEST_FIRST {
                assert!(Cursor::decode(raw, list).is_err(), "{raw:?} was accepted");
            }
        }
    }

    #[test]
    fn a_position_the_database_cannot_hold_is_refused() {
        // PostgreSQL's dates and instants start at 4714-11-24 BC; chrono's go further back.
        let encode = |json: String| URL_SAFE_NO_PAD.encode(json);
        let by_dob = List::Patients(Sort::Dob);
        let born = |day: &str| encode(format!(r#"["dob","{day}","{ID}"]"#));
        assert!(Cursor::decode(&born("-4713-11-24"), by_dob).is_ok());
        for day in ["-4713-11-23", "-5000-01-01", "-262143-01-01"] {
            assert!(Cursor::decode(&born(day), by_dob).is_err(), "{day}");
        }
        let first = -210_866_803_200_000_000_i64;
        let at = |micros: i64| encode(format!(r#"["documents",{micros},"{ID}"]"#));
        assert!(Cursor::decode(&at(first), List::Documents).is_ok());
        assert!(Cursor::decode(&at(first - 1), List::Documents).is_err());
        let legacy = format!("{}_{ID}", first - 1);
        assert!(Cursor::decode(&legacy, List::Documents).is_err());
    }

    /// A sort value of `kind` anywhere chrono reaches: in PostgreSQL's range and before it.
    fn key_of(kind: SortKind) -> BoxedStrategy<SortValue> {
        match kind {
            SortKind::Time => any::<i64>()
                .prop_filter_map("an instant", DateTime::from_timestamp_micros)
                .prop_map(SortValue::Time)
                .boxed(),
            SortKind::Text => any::<String>().prop_map(SortValue::Text).boxed(),
            SortKind::Date => prop::option::of(
                (-262_000..262_000, 1u32..=366)
                    .prop_filter_map("a day", |(year, day)| NaiveDate::from_yo_opt(year, day)),
            )
            .prop_map(SortValue::Date)
            .boxed(),
        }
    }

    /// A list of each sort kind, ascending and descending.
    fn list() -> impl Strategy<Value = List> {
        let sorts = vec![Sort::Name, Sort::DobDesc, Sort::Dob, Sort::UpdatedAtDesc];
        prop_oneof![
            Just(List::AuditEvents),
            Just(List::Documents),
            prop::sample::select(sorts).prop_map(List::Patients),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(7),
            ..ProptestConfig::default()
        })]

        #[test]
        fn a_cursor_decodes_to_what_was_encoded_where_the_database_holds_its_position(
            (list, key) in list().prop_flat_map(|list| (Just(list), key_of(list.sort_kind()))),
            id in any::<u128>(),
            backwards in any::<bool>(),
        ) {
            let stored = match &key {
                SortValue::Time(at) => storable(&at.date_naive()),
                SortValue::Date(Some(day)) => storable(day),
                _ => true,
            };
            let position = Position { key, id: Uuid::from_u128(id) };
            let cursor = if backwards {
                Cursor::before(list, position)
            } else {
                Cursor::after(list, position)
            };
            let decoded = Cursor::decode(&cursor.encode(), list).ok();
            prop_assert_eq!(decoded, stored.then_some(cursor));
        }
    }

    #[test]
    fn a_previous_page_is_read_turned_round_and_answered_in_order() {
        let list = List::AuditEvents;
        let keyset = Keyset::of(list, Some(&at(list, true).encode())).unwrap();
        assert!(!keyset.reads_descending());
        let mut params = SqlParams::new();
        assert_eq!(
            keyset.condition("occurred_at", "id", &mut params).unwrap(),
            "(occurred_at, id) > ($1, $2)"
        );
        assert_eq!(keyset.order_by("occurred_at", "id"), "occurred_at, id");
        // Three rows read oldest first for a page of two: the page is the two nearest the
        // cursor, newest first, with rows before it and the cursor's row after it.
        let mut rows = vec![1, 2, 3];
        let later = |n: &i64| {
            Position::at(
                DateTime::from_timestamp_micros(MICROS + n).unwrap(),
                Uuid::nil(),
            )
        };
        let (previous, next) = keyset.page(&mut rows, 2, later);
        assert_eq!(rows, [2, 1]);
        let previous = Cursor::decode(&previous.unwrap(), list).unwrap();
        assert_eq!(
            (previous.position(), previous.is_backwards()),
            (&later(&2), true)
        );
        let next = Cursor::decode(&next.unwrap(), list).unwrap();
        assert_eq!((next.position(), next.is_backwards()), (&later(&1), false));
    }
}
