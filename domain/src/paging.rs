//! Paging and counting, one way for every list: `Count` (exact, the planner's estimate, or
//! none), `TimeRange` (a time filter's bounds), and for the newest-first lists (attachments,
//! audit events, through either interface) `Keyset` with its one opaque cursor.

use base64::Engine;
use chrono::{DateTime, Utc};
use shared::db::SqlParams;
use tokio_postgres::types::Type;
use uuid::Uuid;

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
) -> shared::ApiResult<(Vec<tokio_postgres::Row>, Option<i64>)> {
    let client = pool.get().await?;
    let typed = params.typed();
    Ok(tokio::try_join!(
        client.query_typed(page_sql, &typed),
        count(&client, how, from_where, params),
    )?)
}

/// The bounds of a time filter: at or after `from`, before `before`; `outside` matches what
/// lies outside both bounds instead (FHIR's `ne`; it needs both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// A row's place in a newest-first list: its time and id (the tie-break).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// A cursor that this server did not make (or that names no position).
#[derive(Debug, thiserror::Error)]
#[error("not a cursor of this list")]
pub struct BadCursor;

/// The newest-first lists that page by keyset. A cursor names its list, and another list
/// refuses it (it would otherwise read as a position there and answer a wrong page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysetList {
    /// The audit trail (`/audit-events/`, AuditEvent): cursors without a tag, as before.
    AuditEvents,
    /// Attachments (DocumentReference): cursors tagged `d`.
    Documents,
}

impl KeysetList {
    fn tag(self) -> Option<&'static str> {
        match self {
            Self::AuditEvents => None,
            Self::Documents => Some("d"),
        }
    }
}

/// Where a page of a newest-first list starts: after a position (the next page), before one
/// (the previous page: read oldest-first, then turned round), or at the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    list: KeysetList,
    position: Option<Position>,
    backwards: bool,
}

/// The prefix the previous-page cursors of FHIR searches carried before the cursor was one
/// opaque format; they are still read.
const LEGACY_PREVIOUS: &str = "prev.";

impl Keyset {
    /// The top of `list`.
    pub fn first(list: KeysetList) -> Self {
        Self {
            list,
            position: None,
            backwards: false,
        }
    }

    /// The keyset a cursor of [`Keyset::page`] on `list` names. Cursors handed out before the
    /// format was unified (DocumentReference's `<µs>_<id>`, and `prev.` in front of a previous
    /// page's) name the same rows; a cursor of another list is refused.
    pub fn decode(raw: &str, list: KeysetList) -> Result<Self, BadCursor> {
        let raw = raw.trim();
        let (raw, legacy_backwards) = match raw.strip_prefix(LEGACY_PREVIOUS) {
            Some(rest) => (rest, true),
            None => (raw, false),
        };
        let (position, backwards) = Self::decode_tagged(raw, list)
            .or_else(|| {
                // DocumentReference's own format before: plain `<µs>_<id>`.
                let (micros, id) = raw.split_once('_')?;
                (list == KeysetList::Documents).then_some((Self::position(micros, id)?, false))
            })
            .ok_or(BadCursor)?;
        Ok(Self {
            list,
            position: Some(position),
            backwards: backwards || legacy_backwards,
        })
    }

    /// `[<tag>|]<µs>|<id>[|before]`, base64url.
    fn decode_tagged(raw: &str, list: KeysetList) -> Option<(Position, bool)> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts: Vec<&str> = text.split('|').collect();
        match (list.tag(), parts.first()) {
            (Some(tag), Some(first)) if *first == tag => {
                parts.remove(0);
            }
            (None, _) => {}
            _ => return None,
        }
        let backwards = match parts.as_slice() {
            [_, _] => false,
            [_, _, "before"] => true,
            _ => return None,
        };
        Some((Self::position(parts[0], parts[1])?, backwards))
    }

    fn position(micros: &str, id: &str) -> Option<Position> {
        Some(Position {
            at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::parse_str(id).ok()?,
        })
    }

    /// Whether the page is read towards the top (a previous page).
    pub fn is_backwards(&self) -> bool {
        self.backwards
    }

    /// The cursor of the page after (`backwards` false) or before `position` in this list.
    fn encode(&self, position: Position, backwards: bool) -> String {
        let mut text = format!("{}|{}", position.at.timestamp_micros(), position.id);
        if let Some(tag) = self.list.tag() {
            text = format!("{tag}|{text}");
        }
        if backwards {
            text.push_str("|before");
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// ` AND (column, id) <|> (...)` and the `ORDER BY` of the page read.
    pub fn sql(&self, column: &str, params: &mut SqlParams) -> (String, String) {
        let condition = match self.position {
            Some(Position { at, id }) => format!(
                " AND ({column}, id) {} ({}, {})",
                if self.backwards { ">" } else { "<" },
                params.push(at, Type::TIMESTAMPTZ),
                params.push(id, Type::UUID)
            ),
            None => String::new(),
        };
        let direction = if self.backwards { "" } else { " DESC" };
        (condition, format!("{column}{direction}, id{direction}"))
    }

    /// The page of `limit` rows newest-first out of the `limit + 1` read in `sql`'s order, and
    /// the (previous, next) cursors around it.
    pub fn page<T>(
        &self,
        rows: &mut Vec<T>,
        limit: i64,
        position: impl Fn(&T) -> Position,
    ) -> (Option<String>, Option<String>) {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let earlier = if self.backwards {
            rows.reverse();
            more
        } else {
            self.position.is_some()
        };
        let later = if self.backwards {
            !rows.is_empty()
        } else {
            more
        };
        (
            rows.first()
                .filter(|_| earlier)
                .map(|first| self.encode(position(first), true)),
            rows.last()
                .filter(|_| later)
                .map(|last| self.encode(position(last), false)),
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
    use super::*;

    fn position() -> Position {
        Position {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::parse_str("6f1c1f4e-2a47-4d8e-9a8e-0d7c3c1e2b10").unwrap(),
        }
    }

    fn at(list: KeysetList, backwards: bool) -> Keyset {
        Keyset {
            list,
            position: Some(position()),
            backwards,
        }
    }

    #[test]
    fn a_cursor_names_its_list_position_and_direction() {
        for list in [KeysetList::AuditEvents, KeysetList::Documents] {
            for backwards in [false, true] {
                let cursor = Keyset::first(list).encode(position(), backwards);
                assert_eq!(Keyset::decode(&cursor, list).unwrap(), at(list, backwards));
            }
        }
    }

    #[test]
    fn a_cursor_of_another_list_is_refused() {
        let documents = Keyset::first(KeysetList::Documents).encode(position(), false);
        let events = Keyset::first(KeysetList::AuditEvents).encode(position(), false);
        assert!(Keyset::decode(&documents, KeysetList::AuditEvents).is_err());
        assert!(Keyset::decode(&events, KeysetList::Documents).is_err());
    }

    #[test]
    fn cursors_of_the_earlier_formats_name_the_same_rows() {
        let audit = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode("1700000000123456|6f1c1f4e-2a47-4d8e-9a8e-0d7c3c1e2b10");
        let document = "1700000000123456_6f1c1f4e-2a47-4d8e-9a8e-0d7c3c1e2b10";
        let (events, documents) = (KeysetList::AuditEvents, KeysetList::Documents);
        assert_eq!(Keyset::decode(&audit, events).unwrap(), at(events, false));
        assert_eq!(
            Keyset::decode(document, documents).unwrap(),
            at(documents, false)
        );
        assert_eq!(
            Keyset::decode(&format!("prev.{audit}"), events).unwrap(),
            at(events, true)
        );
        assert_eq!(
            Keyset::decode(&format!("prev.{document}"), documents).unwrap(),
            at(documents, true)
        );
        // The plain form was only ever DocumentReference's.
        assert!(Keyset::decode(document, events).is_err());
        // The forward cursor keeps the audit list's format: links handed out stay the same.
        assert_eq!(Keyset::first(events).encode(position(), false), audit);
    }

    #[test]
    fn anything_else_is_refused() {
        for raw in [
            "",
            "prev.",
            "x",
            "12_not-a-uuid",
            "é_6f1c1f4e-2a47-4d8e-9a8e-0d7c3c1e2b10",
            "99999999999999999999_6f1c1f4e-2a47-4d8e-9a8e-0d7c3c1e2b10",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode("1|6f1c1f4e-2a47-4d8e-9a8e-0d7c3c1e2b10|after"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1|2|3|4"),
        ] {
            for list in [KeysetList::AuditEvents, KeysetList::Documents] {
                assert!(Keyset::decode(raw, list).is_err(), "{raw:?} was accepted");
            }
        }
    }
}
