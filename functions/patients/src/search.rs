//! GET /patients/: the query string parsed into a search, and the search into one parameterised
//! SQL statement whose WHERE clause holds only the filters given, so each is served by its index.

use chrono::NaiveDate;
use serde::Deserialize;
use shared::db::SqlParams;
use shared::http::Paging;
use shared::{ApiError, FieldError};
use tokio_postgres::types::Type;

use crate::model::parse_date;

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
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every word must start a word of the name, case- and accent-insensitive, in any order.
    NameText(String),
    NameExact(String),
    /// Web-search syntax over the history, English stemming.
    HistoryText(String),
    HasAttachmentMimeType(String),
    DobFrom(NaiveDate),
    DobTo(NaiveDate),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    NameDesc,
    Dob,
    DobDesc,
    CreatedAt,
    CreatedAtDesc,
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
            _ => return None,
        })
    }

    /// Ties broken by id, so that pages never overlap or skip.
    fn order_by(self) -> &'static str {
        match self {
            Self::Name => "p.name, p.id",
            Self::NameDesc => "p.name DESC, p.id DESC",
            Self::Dob => "p.dob, p.id",
            Self::DobDesc => "p.dob DESC, p.id DESC",
            Self::CreatedAt => "p.created_at, p.id",
            Self::CreatedAtDesc => "p.created_at DESC, p.id DESC",
        }
    }
}

/// How `count` is computed: exactly (default), from the planner's estimate, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountMode {
    Exact,
    Estimate,
    None,
}

#[derive(Debug)]
pub struct Search {
    pub filters: Vec<Filter>,
    pub sort: Sort,
    pub skip: i64,
    pub limit: i64,
    pub count: CountMode,
}

/// The longest text filter accepted, in characters and in words.
pub const MAX_TEXT_CHARS: usize = 1_000;
pub const MAX_TEXT_WORDS: usize = 32;

impl Search {
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
            filters.push(Filter::HistoryText(v));
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
                    "Input should be 'name', '-name', 'dob', '-dob', 'created_at' or '-created_at'",
                    "enum",
                ));
                Sort::Name
            }),
        };
        let count = match params.count.as_deref().map(str::trim) {
            None | Some("exact") => CountMode::Exact,
            Some("estimate") => CountMode::Estimate,
            Some("none") => CountMode::None,
            Some(_) => {
                errors.push(FieldError::new(
                    &["query", "count"],
                    "Input should be 'exact', 'estimate' or 'none'",
                    "enum",
                ));
                CountMode::Exact
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Self {
            filters,
            sort,
            skip,
            limit,
            count,
        })
    }

    /// `WHERE ...` (or nothing) over `patients p`, its values pushed onto `params`.
    pub fn where_clause(&self, params: &mut SqlParams) -> String {
        let clauses: Vec<String> = self
            .filters
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
                Filter::HasAttachmentMimeType(v) => format!(
                    "EXISTS (SELECT 1 FROM attachments a WHERE a.patient_id = p.id AND a.mime_type = {})",
                    params.push(v.clone(), Type::TEXT)
                ),
                Filter::DobFrom(d) => format!("p.dob >= {}", params.push(*d, Type::DATE)),
                Filter::DobTo(d) => format!("p.dob <= {}", params.push(*d, Type::DATE)),
            })
            .collect();
        if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        }
    }

    /// The page: `SELECT <columns> ... ORDER BY ... OFFSET/LIMIT`, with its parameters.
    pub fn page_sql(&self, columns: &str) -> (String, SqlParams) {
        let mut params = SqlParams::new();
        let clause = self.where_clause(&mut params);
        let offset = params.push(self.skip, Type::INT8);
        let limit = params.push(self.limit, Type::INT8);
        // One plain statement: with the column statistics of V5 the planner filters through the
        // indexes for rare terms and walks the sort index for common ones (measured at 1M rows).
        let sql = format!(
            "SELECT {columns} FROM patients p{clause} ORDER BY {} OFFSET {offset} LIMIT {limit}",
            self.sort.order_by(),
        );
        (sql, params)
    }

    /// The statement that counts every match (exact) or whose plan estimates it.
    pub fn count_sql(&self) -> Option<(String, SqlParams)> {
        let mut params = SqlParams::new();
        let clause = self.where_clause(&mut params);
        match self.count {
            CountMode::Exact => Some((format!("SELECT count(*) FROM patients p{clause}"), params)),
            CountMode::Estimate => Some((
                format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM patients p{clause}"),
                params,
            )),
            CountMode::None => None,
        }
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
            })
            .collect()
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
        let (sql, params) = s.page_sql("p.id");
        assert_eq!(params.len(), 4);
        assert!(
            sql.contains("carevault_prefix_query($1)") && sql.contains("p.dob >= $2"),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY p.name, p.id OFFSET $3 LIMIT $4"),
            "{sql}"
        );
        assert!(!sql.contains("history"), "{sql}");
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
