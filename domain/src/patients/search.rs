//! GET /patients/: the query string parsed into a search, and the search into one parameterised
//! SQL statement whose WHERE clause holds only the filters given, so each is served by its index.

use chrono::NaiveDate;
use serde::Deserialize;
use shared::db::SqlParams;
use shared::input::Paging;
use shared::{ApiError, FieldError};
use tokio_postgres::types::Type;

use crate::paging::{Count, Cursor, Keyset, List, Position, SortKind, SortValue};
use crate::patients::model::{parse_date, Patient};

/// The query string as sent; everything optional.
#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    name_text: Option<String>,
    name_exact: Option<String>,
    history_text: Option<String>,
    has_attachment_mime_type: Option<String>,
    dob_from: Option<String>,
    dob_to: Option<String>,
    skip: Option<i64>,
    limit: Option<i64>,
    sort: Option<String>,
    count: Option<String>,
    cursor: Option<String>,
}

/// Serialisable: a bulk export keeps its `_typeFilter` searches as parsed at kick-off.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Filter {
    /// Every word must start a word of the name, case- and accent-insensitive, in any order.
    NameText(String),
    NameExact(String),
    /// Web-search syntax over the history, English stemming.
    HistoryText(String),
    HasAttachmentMimeType(String),
    DobFrom(NaiveDate),
    DobTo(NaiveDate),
    /// Born before the first or after the last day (FHIR's `birthdate=ne...`).
    DobOutside(NaiveDate, NaiveDate),
    /// Any of these ids (FHIR's `_id`); none: no match.
    Ids(Vec<uuid::Uuid>),
    /// An identifier in `system` (any system when None) with `value` (any value when None).
    Identifier {
        system: Option<String>,
        value: Option<String>,
    },
    /// Changed at or after this instant (FHIR's `_lastUpdated`).
    UpdatedFrom(chrono::DateTime<chrono::Utc>),
    /// Changed before this instant.
    UpdatedBefore(chrono::DateTime<chrono::Utc>),
    /// Any of these groups of filters, each group all of its filters (FHIR's commas).
    AnyOf(Vec<Vec<Filter>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    NameDesc,
    Dob,
    DobDesc,
    CreatedAt,
    CreatedAtDesc,
    UpdatedAt,
    UpdatedAtDesc,
}

impl Sort {
    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "name" => Self::Name,
            "-name" => Self::NameDesc,
            "dob" => Self::Dob,
            "-dob" => Self::DobDesc,
            "created_at" => Self::CreatedAt,
            "-created_at" => Self::CreatedAtDesc,
            "updated_at" => Self::UpdatedAt,
            "-updated_at" => Self::UpdatedAtDesc,
            _ => return None,
        })
    }

    /// The `sort` parameter's value (a cursor names its sort by it).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::NameDesc => "-name",
            Self::Dob => "dob",
            Self::DobDesc => "-dob",
            Self::CreatedAt => "created_at",
            Self::CreatedAtDesc => "-created_at",
            Self::UpdatedAt => "updated_at",
            Self::UpdatedAtDesc => "-updated_at",
        }
    }

    /// The column sorted on; ties are broken by id, so that pages never overlap or skip.
    fn column(self) -> &'static str {
        match self {
            Self::Name | Self::NameDesc => "name",
            Self::Dob | Self::DobDesc => "dob",
            Self::CreatedAt | Self::CreatedAtDesc => "created_at",
            Self::UpdatedAt | Self::UpdatedAtDesc => "updated_at",
        }
    }

    pub(crate) fn descending(self) -> bool {
        matches!(
            self,
            Self::NameDesc | Self::DobDesc | Self::CreatedAtDesc | Self::UpdatedAtDesc
        )
    }

    /// What the sort column holds.
    pub(crate) fn kind(self) -> SortKind {
        match self.column() {
            "name" => SortKind::Text,
            "dob" => SortKind::Date,
            _ => SortKind::Time,
        }
    }
}

/// A patient's place in `sort`'s order.
pub fn position(sort: Sort, patient: &Patient) -> Position {
    let key = match sort.column() {
        "name" => SortValue::Text(patient.name.clone()),
        "dob" => SortValue::Date(patient.dob),
        "updated_at" => SortValue::Time(patient.updated_at),
        _ => SortValue::Time(patient.created_at),
    };
    Position {
        key,
        id: patient.id,
    }
}

/// The cursor of the patients after `patient` in `sort` (where a page cut short goes on).
pub fn cursor_after(sort: Sort, patient: &Patient) -> String {
    Cursor::after(List::Patients(sort), position(sort, patient)).encode()
}

/// `websearch_to_tsquery` reads a `-` before an operand as NOT and nests a run of them, spaces
/// between them or not: 33 in a row overflow PostgreSQL's tsquery stack (an error, not a
/// search). Two NOTs cancel, so a run of five or more dashes (with any whitespace, or any of
/// the characters the parser skips there, among them) becomes three or four dashes, as their
/// count is odd or even, with its whitespace at either end: the
/// same query, never more than four NOTs deep; between two parts of a word
/// (`asthma------cough`) several dashes still join them as before.
fn bounded_negations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let dashes = run.chars().filter(|c| *c == '-').count();
        if dashes < 5 {
            out.push_str(run);
        } else {
            if run.starts_with(char::is_whitespace) {
                out.push(' ');
            }
            out.push_str(if dashes % 2 == 1 { "---" } else { "----" });
            if run.ends_with(char::is_whitespace) {
                out.push(' ');
            }
        }
        run.clear();
    };
    for c in text.chars() {
        // Where it expects a word, websearch_to_tsquery also skips these: `-(-(-(` nests too.
        if c == '-' || c.is_whitespace() || "!&|()<".contains(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[derive(Debug)]
pub struct Search {
    pub filters: Vec<Filter>,
    pub sort: Sort,
    pub skip: i64,
    pub limit: i64,
    pub count: Count,
    /// Where the page starts: a keyset of `List::Patients(sort)`.
    pub keyset: Keyset,
}

/// The longest text filter accepted, in characters and in words.
pub const MAX_TEXT_CHARS: usize = 1_000;
pub const MAX_TEXT_WORDS: usize = 32;

/// How many rows of the sort order a filtered search without an exact count may walk before it
/// gives up and collects its matches: a few milliseconds, whatever the data.
pub const WALK_BUDGET: i64 = 4_000;

impl Search {
    /// The JSON API's query as a search. (Long because every parameter's check adds to one
    /// list: FastAPI answers every bad parameter in one 422, and so does this.)
    pub fn parse(params: SearchParams) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let (skip, limit) = match (Paging {
            skip: params.skip,
            limit: params.limit,
        })
        .checked()
        {
            Ok(paging) => paging,
            Err(ApiError::Validation(e)) => {
                errors.extend(e);
                (0, 0)
            }
            Err(other) => return Err(other),
        };
        // Bounded, so no input can make a query plan of unbounded size.
        for (name, value) in [
            ("name_text", &params.name_text),
            ("name_exact", &params.name_exact),
            ("history_text", &params.history_text),
            ("has_attachment_mime_type", &params.has_attachment_mime_type),
        ] {
            let Some(value) = value else { continue };
            if value.chars().count() > MAX_TEXT_CHARS {
                errors.push(FieldError::new(
                    &["query", name],
                    format!("String should have at most {MAX_TEXT_CHARS} characters"),
                    "string_too_long",
                ));
            } else if value.split_whitespace().count() > MAX_TEXT_WORDS {
                errors.push(FieldError::new(
                    &["query", name],
                    format!("Search text should have at most {MAX_TEXT_WORDS} words"),
                    "too_long",
                ));
            }
        }
        // An empty parameter is no filter (`?name_text=` from a cleared search box).
        let given = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let mut filters = Vec::new();
        if let Some(v) = given(params.name_text) {
            filters.push(Filter::NameText(v));
        }
        if let Some(v) = given(params.name_exact) {
            filters.push(Filter::NameExact(v));
        }
        if let Some(v) = given(params.history_text) {
            filters.push(Filter::HistoryText(bounded_negations(&v)));
        }
        if let Some(v) = given(params.has_attachment_mime_type) {
            filters.push(Filter::HasAttachmentMimeType(v.trim().to_owned()));
        }
        for (name, value, make) in [
            (
                "dob_from",
                params.dob_from,
                Filter::DobFrom as fn(NaiveDate) -> Filter,
            ),
            ("dob_to", params.dob_to, Filter::DobTo),
        ] {
            // A typed parameter sent empty is invalid (only text filters treat empty as absent).
            if let Some(raw) = value {
                match parse_date(&raw) {
                    Some(date) => filters.push(make(date)),
                    None => errors.push(FieldError::new(
                        &["query", name],
                        "Input should be a valid date (YYYY-MM-DD)",
                        "date_parsing",
                    )),
                }
            }
        }
        let sort = match params.sort {
            None => Sort::Name,
            Some(raw) => Sort::parse(raw.trim()).unwrap_or_else(|| {
                errors.push(FieldError::new(
                    &["query", "sort"],
                    "Input should be 'name', '-name', 'dob', '-dob', 'created_at', '-created_at', 'updated_at' or '-updated_at'",
                    "enum",
                ));
                Sort::Name
            }),
        };
        let count = match params.count.as_deref().map(str::trim) {
            None | Some("exact") => Count::Exact,
            Some("estimate") => Count::Estimate,
            Some("none") => Count::None,
            Some(_) => {
                errors.push(FieldError::new(
                    &["query", "count"],
                    "Input should be 'exact', 'estimate' or 'none'",
                    "enum",
                ));
                Count::Exact
            }
        };
        let cursor = params.cursor.as_deref().map(str::trim);
        let keyset = Keyset::of(List::Patients(sort), cursor.filter(|raw| !raw.is_empty()))
            .unwrap_or_else(|_| {
                errors.push(FieldError::new(
                    &["query", "cursor"],
                    "Invalid cursor (use the next_cursor of a page with the same sort)",
                    "value_error",
                ));
                Keyset::first(List::Patients(sort))
            });
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Self {
            filters,
            sort,
            skip,
            limit,
            count,
            keyset,
        })
    }

    /// `WHERE ...` (or nothing) over `patients p`, its values pushed onto `params`.
    pub fn where_clause(&self, params: &mut SqlParams) -> String {
        let clauses = Self::conditions(&self.filters, params);
        if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        }
    }

    /// `filters` as one SQL condition over `patients p` (`true` without filters).
    pub fn condition(filters: &[Filter], params: &mut SqlParams) -> String {
        let clauses = Self::conditions(filters, params);
        if clauses.is_empty() {
            "true".into()
        } else {
            format!("({})", clauses.join(" AND "))
        }
    }

    /// One SQL condition per filter over `patients p`.
    fn conditions(filters: &[Filter], params: &mut SqlParams) -> Vec<String> {
        filters
            .iter()
            .map(|filter| match filter {
                Filter::NameText(v) => format!(
                    "p.name_search @@ carevault_prefix_query({})",
                    params.push(v.clone(), Type::TEXT)
                ),
                Filter::NameExact(v) => format!("p.name = {}", params.push(v.clone(), Type::TEXT)),
                Filter::HistoryText(v) => format!(
                    "p.history_search @@ websearch_to_tsquery('english', {})",
                    params.push(v.clone(), Type::TEXT)
                ),
                // A semi-join bounded by the matching patients (one row each in
                // patient_attachment_types, whose indexes lead with the type).
                Filter::HasAttachmentMimeType(v) => format!(
                    "p.id IN (SELECT t.patient_id FROM patient_attachment_types t WHERE t.mime_type = {})",
                    params.push(v.clone(), Type::TEXT)
                ),
                Filter::DobFrom(d) => format!("p.dob >= {}", params.push(*d, Type::DATE)),
                Filter::DobTo(d) => format!("p.dob <= {}", params.push(*d, Type::DATE)),
                Filter::DobOutside(first, last) => format!(
                    "(p.dob < {} OR p.dob > {})",
                    params.push(*first, Type::DATE),
                    params.push(*last, Type::DATE)
                ),
                Filter::Ids(ids) => {
                    format!("p.id = ANY({})", params.push(ids.clone(), Type::UUID_ARRAY))
                }
                // Bounded by the matching identifiers (their primary key or value index).
                Filter::Identifier { system, value } => {
                    let mut on = Vec::new();
                    if let Some(system) = system {
                        on.push(format!(
                            "i.system = {}",
                            params.push(system.clone(), Type::VARCHAR)
                        ));
                    }
                    if let Some(value) = value {
                        on.push(format!(
                            "i.value = {}",
                            params.push(value.clone(), Type::VARCHAR)
                        ));
                    }
                    let on = if on.is_empty() {
                        "true".to_owned()
                    } else {
                        on.join(" AND ")
                    };
                    format!("p.id IN (SELECT i.patient_id FROM patient_identifiers i WHERE {on})")
                }
                Filter::UpdatedFrom(t) => {
                    format!("p.updated_at >= {}", params.push(*t, Type::TIMESTAMPTZ))
                }
                Filter::UpdatedBefore(t) => {
                    format!("p.updated_at < {}", params.push(*t, Type::TIMESTAMPTZ))
                }
                Filter::AnyOf(groups) => {
                    let any: Vec<String> = groups
                        .iter()
                        .map(|group| match Self::conditions(group, params) {
                            all if all.is_empty() => "true".to_owned(),
                            all => format!("({})", all.join(" AND ")),
                        })
                        .collect();
                    if any.is_empty() {
                        "false".to_owned()
                    } else {
                        format!("({})", any.join(" OR "))
                    }
                }
            })
            .collect()
    }

    /// Whether a walk of `WALK_BUDGET` rows likely holds the page: `estimated` matches spread
    /// over `total` patients would put at least 4 times the rows wanted within the budget (the
    /// margin is for matches that cluster; a walk that comes back short costs only the budget).
    pub fn walk_is_likely(&self, estimated: i64, total: i64) -> bool {
        estimated as f64 * WALK_BUDGET as f64 >= 4.0 * self.rows_wanted() as f64 * total as f64
    }

    /// The rows a page reads: those skipped, the page, and one to tell whether another follows.
    fn rows_wanted(&self) -> i64 {
        self.skip.saturating_add(self.limit + 1)
    }

    /// For a filtered search that needs no exact count, the page from a bounded walk of the sort
    /// order: the first `WALK_BUDGET` rows in sort order, filtered. When the matches are spread
    /// through the order it holds the whole page at once; when they are rare or sit late in it
    /// the walk comes back short, costs at most the budget, and the caller collects the matches
    /// instead (`statement`). None when the walk cannot serve (no filters, an exact count, a
    /// cursor, or a page beyond the budget).
    pub fn walk_statement(&self, columns: &str) -> Option<(String, SqlParams)> {
        if self.filters.is_empty()
            || self.attachment_type_only().is_some()
            || self.term_search().is_some()
            || self.count == Count::Exact
            || self.keyset.cursor().is_some()
            || self.rows_wanted() > WALK_BUDGET
        {
            return None;
        }
        let mut params = SqlParams::new();
        let order = self.sort_sql();
        let budget = params.push(WALK_BUDGET, Type::INT8);
        let clause = self.where_clause(&mut params);
        let offset = params.push(self.skip, Type::INT8);
        let limit = params.push(self.limit + 1, Type::INT8);
        Some((
            // The identifiers are read for the page's rows only (the planner evaluates a
            // subquery column after the sort and limit).
            format!(
                "SELECT {columns}, {} FROM (SELECT * FROM patients p ORDER BY {order} LIMIT {budget}) p{clause}
                 ORDER BY {order} OFFSET {offset} LIMIT {limit}",
                crate::patients::model::identifiers_column("p")
            ),
            params,
        ))
    }

    /// One statement for the page and the count: `limit + 1` patients in sort order (the extra
    /// one says whether there is a next page), each row ending with the total (`count=exact`) or
    /// NULL; one row of NULL patient columns when the page is empty.
    ///
    /// With filters, the matches are collected once through their indexes (the planner picks
    /// bitmap scans for rare terms, a sequential scan for broad ones), then counted and sorted
    /// for the page: the cost is bounded by the matches, never by where they sit in the sort
    /// order (walking the sort index and filtering is fast only until the matches happen to be
    /// late in it). Without filters, the page's ids come from an index-only walk of the sort
    /// index, its rows are read for those ids alone, and the total from the counter the write
    /// path keeps (patient_totals).
    pub fn statement(&self, columns: &str) -> (String, SqlParams) {
        let mut params = SqlParams::new();
        let column = self.sort.column();
        let order = self.keyset.order_by("page.sort_key", "page.id");
        let offset = params.push(self.skip, Type::INT8);
        let limit = params.push(self.limit + 1, Type::INT8);
        let qualified = |relation: &str| {
            columns
                .split(',')
                .map(|c| format!("{relation}.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let total_of = |exact: String| {
            if self.count == Count::Exact {
                exact
            } else {
                "SELECT NULL::int8 AS n".to_owned()
            }
        };
        // Read for the page's rows only, in the same statement.
        let identifiers = crate::patients::model::identifiers_column("p");
        let index_ordered = if self.filters.is_empty() {
            // `id = 1` (its primary key) tells the planner this is one row: a never-analyzed
            // one-row table is estimated at thousands, which multiplied the page's estimated
            // cost past `jit_above_cost` (15 ms of JIT compilation for a 1 ms statement).
            let total = "SELECT patients AS n FROM patient_totals WHERE id = 1".to_owned();
            Some((SortIndex::patients(column), total))
        } else if let Some(mime_type) = self.attachment_type_only() {
            // The page straight off the type's index in sort order, and the count an
            // index-only range scan of it: no probe of patients per match.
            let mime_type = params.push(mime_type.to_owned(), Type::TEXT);
            let total = format!(
                "SELECT count(*) AS n FROM patient_attachment_types t WHERE t.mime_type = {mime_type}"
            );
            Some((SortIndex::attachment_type(column, &mime_type), total))
        } else if let Some(term) = self.term_search() {
            // Index-only: a lexeme's entries are in name order (the page straight off the
            // index); a prefix's are one range, of which only the page's worth is sorted.
            let index = match term {
                TermSearch::HistoryWord(word) => {
                    SortIndex::history_word(&params.push(word.to_owned(), Type::TEXT))
                }
                TermSearch::NamePrefix(word) => {
                    SortIndex::name_prefix(&params.push(word.to_owned(), Type::TEXT))
                }
            };
            let total = format!(
                "SELECT count(*) AS n FROM {} WHERE {}",
                index.from,
                index.within.as_deref().unwrap_or("true")
            );
            Some((index, total))
        } else {
            None
        };
        let sql = if let Some((index, total)) = index_ordered {
            let page = self.index_ordered_page(&index, &mut params, &offset, &limit);
            let total = total_of(total);
            format!(
                "WITH page AS ({page}), total AS ({total})
                 SELECT {}, total.n, {identifiers} FROM total
                 LEFT JOIN (page JOIN patients p USING (id)) ON true
                 ORDER BY {order}",
                qualified("p")
            )
        } else {
            // The matches carry only their id and sort key (a few bytes each, however many
            // there are); the page's rows are read by id afterwards. Carrying whole rows was
            // measured slower for broad filters (docs/benchmarks.md).
            let clause = self.where_clause(&mut params);
            let after = self
                .keyset
                .condition("m.sort_key", "m.id", &mut params)
                .map(|condition| format!(" WHERE {condition}"))
                .unwrap_or_default();
            let total = total_of("SELECT count(*) AS n FROM matches".into());
            format!(
                "WITH matches AS MATERIALIZED (
                    SELECT p.id, p.{column} AS sort_key FROM patients p{clause}
                 ), page AS (
                    SELECT m.id, m.sort_key FROM matches m{after}
                    ORDER BY {} OFFSET {offset} LIMIT {limit}
                 ), total AS ({total})
                 SELECT {}, total.n, {identifiers} FROM total
                 LEFT JOIN (page JOIN patients p USING (id)) ON true
                 ORDER BY {order}",
                self.keyset.order_by("m.sort_key", "m.id"),
                qualified("p")
            )
        };
        (sql, params)
    }

    /// The ids of a page in sort order from a sort index alone (the patients', or an attachment
    /// type's). After a cursor, a range of the index; a NULL dob is its own range (NULLs sort
    /// apart), read only when the non-NULL range runs out, so that no page sorts the matches.
    fn index_ordered_page(
        &self,
        index: &SortIndex,
        params: &mut SqlParams,
        offset: &str,
        limit: &str,
    ) -> String {
        let SortIndex {
            from,
            id,
            key,
            within,
            parts,
        } = index;
        let descending = self.keyset.reads_descending();
        let direction = if descending { " DESC" } else { "" };
        let ordered = |part: Option<&String>, condition: Option<String>| {
            let conditions: Vec<&str> = within
                .iter()
                .chain(part)
                .chain(&condition)
                .map(String::as_str)
                .collect();
            let clause = if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            };
            format!(
                "SELECT {id} AS id, {key} AS sort_key FROM {from}{clause}
                 ORDER BY {key}{direction}, {id}{direction}"
            )
        };
        let parts: Vec<Option<&String>> = if parts.is_empty() {
            vec![None]
        } else {
            parts.iter().map(Some).collect()
        };
        let cursor = self.keyset.cursor().map(|cursor| {
            let after = params.push(cursor.position().id, Type::UUID);
            (after, cursor.position().key.push(params))
        });
        let comparison = if descending { "<" } else { ">" };
        let segments: Vec<String> = parts
            .iter()
            .flat_map(|&part| {
                let Some((after, value)) = &cursor else {
                    return vec![ordered(part, None)];
                };
                let after_key = |value: &str| {
                    ordered(
                        part,
                        Some(format!("({key}, {id}) {comparison} ({value}, {after})")),
                    )
                };
                let nulls_after =
                    |condition: &str| ordered(part, Some(format!("{key} IS NULL{condition}")));
                let not_null = || ordered(part, Some(format!("{key} IS NOT NULL")));
                match (self.sort.kind() == SortKind::Date, descending, value) {
                    (false, _, Some(value)) => vec![after_key(value)],
                    // Ascending: the non-NULL keys after the cursor, then every NULL.
                    (true, false, Some(value)) => vec![after_key(value), nulls_after("")],
                    (true, false, None) => vec![nulls_after(&format!(" AND {id} > {after}"))],
                    // Descending: NULLs first.
                    (true, true, Some(value)) => vec![after_key(value)],
                    (true, true, None) => {
                        vec![nulls_after(&format!(" AND {id} < {after}")), not_null()]
                    }
                    (false, _, None) => unreachable!("only dob keys are NULL"),
                }
            })
            .collect();
        if let [segment] = segments.as_slice() {
            return format!("{segment} OFFSET {offset} LIMIT {limit}");
        }
        // UNION ALL under LIMIT reads a segment only while the page needs rows; parts of the
        // index interleave in sort order, so their few rows are sorted together.
        let rows = params.push(self.skip.saturating_add(self.limit + 1), Type::INT8);
        let union = segments
            .iter()
            .map(|segment| format!("({segment} LIMIT {rows})"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let merged = if parts.len() > 1 {
            format!(" ORDER BY sort_key{direction}, id{direction}")
        } else {
            String::new()
        };
        format!("SELECT * FROM ({union}) segments{merged} OFFSET {offset} LIMIT {limit}")
    }

    /// The one-word text search `patient_search_terms` serves (migration V21), when the search
    /// has that filter alone and the name sort (the terms carry the name, the default sort's
    /// key). Phrases, operators, several words and the other sorts stay with the GIN indexes.
    fn term_search(&self) -> Option<TermSearch<'_>> {
        if !matches!(self.sort, Sort::Name | Sort::NameDesc) {
            return None;
        }
        match self.filters.as_slice() {
            [Filter::HistoryText(text)] => one_word(text).map(TermSearch::HistoryWord),
            [Filter::NameText(text)] => one_word(text).map(TermSearch::NamePrefix),
            _ => None,
        }
    }

    /// The type, when an attachment type is the search's only filter.
    fn attachment_type_only(&self) -> Option<&str> {
        match self.filters.as_slice() {
            [Filter::HasAttachmentMimeType(mime_type)] => Some(mime_type),
            _ => None,
        }
    }

    /// `p.<sort column> [DESC], p.id [DESC]`: the order of the whole result.
    pub fn sort_sql(&self) -> String {
        let direction = if self.sort.descending() { " DESC" } else { "" };
        format!("p.{}{direction}, p.id{direction}", self.sort.column())
    }

    /// The statement whose plan estimates the number of matches (`count=estimate`).
    pub fn estimate_sql(&self) -> (String, SqlParams) {
        let mut params = SqlParams::new();
        let clause = self.where_clause(&mut params);
        (
            format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM patients p{clause}"),
            params,
        )
    }

    /// The filter names used, for logs and the audit trail (never their values).
    pub fn filter_names(&self) -> Vec<&'static str> {
        self.filters
            .iter()
            .map(|f| match f {
                Filter::NameText(_) => "name_text",
                Filter::NameExact(_) => "name_exact",
                Filter::HistoryText(_) => "history_text",
                Filter::HasAttachmentMimeType(_) => "has_attachment_mime_type",
                Filter::DobFrom(_) => "dob_from",
                Filter::DobTo(_) => "dob_to",
                Filter::DobOutside(..) => "dob_outside",
                Filter::Ids(_) => "ids",
                Filter::Identifier { .. } => "identifier",
                Filter::UpdatedFrom(_) | Filter::UpdatedBefore(_) => "last_updated",
                Filter::AnyOf(_) => "any_of",
            })
            .collect()
    }
}

/// A one-word text search that the terms table answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermSearch<'a> {
    /// The history holds the word's lexeme (English stemming, as `history_text`).
    HistoryWord(&'a str),
    /// A word of the name starts with the word (folded, as `name_text`).
    NamePrefix(&'a str),
}

/// The longest word a one-word search sends to the terms table (which holds history lexemes
/// up to this length).
const TERM_MAX_CHARS: usize = 64;

/// `text` trimmed, when PostgreSQL's text-search parser reads it as exactly one word, so that
/// the terms table's one lexeme is the whole query: ASCII letters and digits starting with a
/// letter, digits alone, or letters alone (ASCII and the Latin letters of U+00C0 to U+024F,
/// which the folding keeps letters). A word that starts with digits and goes on with letters
/// can be two for the parser (`1e5x` is the number `1e5` and the word `x`). Any other text (a
/// hyphen, an apostrophe, an operator, a second word, another script) goes to the GIN index,
/// which gives the same answer more slowly.
pub fn one_word(text: &str) -> Option<&str> {
    let word = text.trim();
    let letter = |c: char| c.is_ascii_alphabetic() || is_latin_letter(c);
    let ascii = word.chars().all(|c| c.is_ascii_alphanumeric())
        && (word.starts_with(|c: char| c.is_ascii_alphabetic())
            || word.chars().all(|c| c.is_ascii_digit()));
    let one_token = ascii || word.chars().all(letter);
    (one_token && (1..=TERM_MAX_CHARS).contains(&word.chars().count())).then_some(word)
}

/// The letters of Latin-1 Supplement and Latin Extended-A and -B (not × and ÷, nor the few
/// whose folding is not one letter: `ŉ`, which unaccent spells `'n`).
fn is_latin_letter(c: char) -> bool {
    ('\u{c0}'..='\u{24f}').contains(&c) && !matches!(c, '×' | '÷' | 'ŉ')
}

/// A sort index a page can be read from in order: its relation, the patient id and sort key
/// columns, the condition that selects its entries (an attachment type's leading column), and
/// the parts of those entries that are each in sort order when there are several (a prefix's
/// words: its own word, in name order, and the longer ones).
struct SortIndex {
    from: &'static str,
    id: &'static str,
    key: String,
    within: Option<String>,
    parts: Vec<String>,
}

impl SortIndex {
    /// `patients (<key>, id)`.
    fn patients(column: &str) -> Self {
        Self {
            from: "patients p",
            id: "p.id",
            key: format!("p.{column}"),
            within: None,
            parts: Vec::new(),
        }
    }

    /// `patient_search_terms (kind, term, name, patient_id)` for one history lexeme: `word`'s
    /// (none for a stop word, which matches nothing, as in the GIN search).
    fn history_word(word: &str) -> Self {
        Self {
            from: "patient_search_terms t",
            id: "t.patient_id",
            key: "t.name".to_owned(),
            within: Some(format!(
                "t.kind = 'h' AND t.term = (tsvector_to_array(to_tsvector('english', {word})))[1]"
            )),
            parts: Vec::new(),
        }
    }

    /// `patient_search_terms` for the name words starting with `word` (folded and cut as
    /// `carevault_prefix_query` cuts it): one range of the index, and of each patient's words
    /// in it only the first (`shared` shorter than the prefix), so each patient once. The word
    /// itself is read in name order (`james`: most of the matches, off the index); the longer
    /// words (`jameson`) only a page's worth each, sorted with it.
    fn name_prefix(word: &str) -> Self {
        let prefix = format!("left(carevault_fold({word}), 32)");
        Self {
            from: "patient_search_terms t",
            id: "t.patient_id",
            key: "t.name".to_owned(),
            within: Some(format!(
                "t.kind = 'n' AND t.term >= {prefix} AND t.term < {prefix} || chr(1114111)
                 AND starts_with(t.term, {prefix}) AND t.shared < length({prefix})"
            )),
            parts: vec![format!("t.term = {prefix}"), format!("t.term > {prefix}")],
        }
    }

    /// `patient_attachment_types (mime_type, <key>, patient_id)` for one type.
    fn attachment_type(column: &str, mime_type: &str) -> Self {
        Self {
            from: "patient_attachment_types t",
            id: "t.patient_id",
            key: format!("t.{column}"),
            within: Some(format!("t.mime_type = {mime_type}")),
            parts: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(pairs: &[(&str, &str)]) -> Result<Search, ApiError> {
        let query = serde_urlencoded::to_string(pairs).unwrap();
        Search::parse(serde_urlencoded::from_str(&query).unwrap())
    }

    #[test]
    fn only_given_filters_reach_the_sql() {
        let s = search(&[
            ("name_text", "jo smi"),
            ("dob_from", "1980-01-01"),
            ("history_text", ""),
        ])
        .unwrap();
        let (sql, params) = s.statement("id");
        // offset, limit, then the two filters.
        assert_eq!(params.len(), 4);
        assert!(
            sql.contains("carevault_prefix_query($3)") && sql.contains("p.dob >= $4"),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY m.sort_key, m.id OFFSET $1 LIMIT $2"),
            "{sql}"
        );
        assert!(!sql.contains("history"), "{sql}");
    }

    #[test]
    fn only_one_word_alone_under_the_name_sort_reads_the_terms_table() {
        let reads_terms = |pairs: &[(&str, &str)]| {
            let (sql, _) = search(pairs).unwrap().statement("id");
            sql.contains("patient_search_terms")
        };
        for (filter, word) in [
            ("history_text", "asthma"),
            ("history_text", "  Asthma "),
            ("name_text", "jo"),
            ("name_text", "Dvořák"),
            ("name_text", "1234"),
            ("name_text", "covid19"),
        ] {
            for sort in ["name", "-name"] {
                assert!(
                    reads_terms(&[(filter, word), ("sort", sort)]),
                    "{filter}={word}"
                );
            }
            for sort in ["dob", "-created_at", "updated_at"] {
                assert!(!reads_terms(&[(filter, word), ("sort", sort)]), "{sort}");
            }
            assert!(!reads_terms(&[(filter, word), ("dob_from", "1990-01-01")]));
        }
        for (filter, text) in [
            ("name_text", "o'brien"),
            ("name_text", "smith-jones"),
            ("name_text", "mary smith"),
            ("name_text", "1e5x"),
            ("name_text", "12abc"),
            ("name_text", "東京"),
            ("history_text", "\"asthma\""),
            ("history_text", "-asthma"),
            ("history_text", "asthma or gout"),
            ("history_text", &"a".repeat(TERM_MAX_CHARS + 1)),
        ] {
            assert!(!reads_terms(&[(filter, text)]), "{filter}={text}");
        }
    }

    #[test]
    fn a_run_of_negations_keeps_its_parity_and_no_more() {
        for (sent, searched) in [
            ("-asthma", "-asthma"),
            ("----asthma", "----asthma"),
            ("- - - - asthma", "- - - - asthma"),
            ("-----asthma", "---asthma"),
            ("------asthma", "----asthma"),
            ("- - - - - asthma", "--- asthma"),
            ("cough - - - - - - asthma", "cough ---- asthma"),
            ("asthma -----", "asthma ---"),
            ("asthma------cough", "asthma----cough"),
            ("smith-jones", "smith-jones"),
            ("\"a b\" -----c", "\"a b\" ---c"),
            ("-(-(-(-(-(asthma", "---asthma"),
            ("-!-!-!-!-!-!asthma", "----asthma"),
            ("(a | b)", "(a | b)"),
        ] {
            assert_eq!(bounded_negations(sent), searched, "{sent:?}");
        }
        let many = "-".repeat(1000);
        assert_eq!(bounded_negations(&many), "----");
        assert_eq!(bounded_negations(&format!("{many}x")), "----x");
    }

    #[test]
    fn a_cursor_belongs_to_its_sort() {
        // Stored times have microseconds.
        let now =
            chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
        let patient = Patient {
            id: uuid::Uuid::new_v4(),
            name: "Ann O'Neil".into(),
            dob: None,
            contact_info: None,
            medical_history: None,
            identifiers: Vec::new(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        for sort in [Sort::Name, Sort::DobDesc, Sort::CreatedAt] {
            let cursor = cursor_after(sort, &patient);
            let keyset = Keyset::of(List::Patients(sort), Some(&cursor)).unwrap();
            assert_eq!(
                keyset.cursor().unwrap().position(),
                &position(sort, &patient)
            );
            let other = if sort == Sort::Name {
                Sort::Dob
            } else {
                Sort::Name
            };
            assert!(Keyset::of(List::Patients(other), Some(&cursor)).is_err());
        }
        assert!(search(&[("cursor", "not-a-cursor")]).is_err());
    }

    #[test]
    fn bad_values_are_all_reported() {
        let Err(ApiError::Validation(errors)) = search(&[
            ("limit", "5000"),
            ("sort", "age"),
            ("dob_to", "yesterday"),
            ("count", "maybe"),
        ]) else {
            panic!("expected 422");
        };
        let fields: Vec<_> = errors
            .iter()
            .map(|e| e.loc[1].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fields, ["limit", "dob_to", "sort", "count"]);
    }
}
