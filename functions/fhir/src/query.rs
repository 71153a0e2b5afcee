//! FHIR search parameters as sent: the raw query string (API Gateway joins repeated parameters
//! with commas in `queryStringParameters`, which would turn AND into OR), names with their
//! modifier, and dates with their prefix and precision.

use axum::http::HeaderMap;
use chrono::{Datelike, Days, NaiveDate};
use shared::ApiError;

/// `_count` when none is given, and the most a page holds.
pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 200;

/// What every search takes besides its own parameters: `_count` (clamped), `_cursor`,
/// `_format`; and the parameters it does not know, ignored unless the client asks for strict
/// handling.
pub struct Common {
    pub count: i64,
    pub cursor: Option<String>,
    pub total: Total,
    pub unknown: Vec<String>,
}

/// `_total`: the JSON API's count modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

impl Common {
    pub fn new() -> Self {
        Self {
            count: DEFAULT_COUNT,
            cursor: None,
            total: Total::Accurate,
            unknown: Vec::new(),
        }
    }

    /// Takes `param` when it is a common one (Ok(true)).
    pub fn take(&mut self, param: &Param) -> Result<bool, ApiError> {
        let value = param.value.trim();
        match (param.name.as_str(), param.modifier.as_deref()) {
            ("_count", None) => {
                self.count = value
                    .parse::<i64>()
                    .map_err(|_| {
                        ApiError::BadRequest(format!("_count must be a number, not {value:?}"))
                    })?
                    .clamp(1, MAX_COUNT)
            }
            ("_cursor", None) => self.cursor = Some(value.to_owned()),
            ("_total", None) => {
                self.total = match value {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "_total takes none, estimate or accurate, not {other:?}"
                        )))
                    }
                }
            }
            // How the answer is shaped, not what it holds.
            ("_format", None) if value.contains("json") => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Notes a parameter the search does not know.
    pub fn unknown(&mut self, param: &Param) {
        self.unknown.push(match &param.modifier {
            Some(m) => format!("{}:{m}", param.name),
            None => param.name.clone(),
        });
    }

    /// 400 for unknown parameters when the client sent `Prefer: handling=strict`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let strict = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split([',', ';']).any(|p| p.trim() == "handling=strict"));
        if strict && !self.unknown.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "Unknown search parameters: {}",
                self.unknown.join(", ")
            )));
        }
        Ok(())
    }
}

/// A bad `_cursor`: not one this search made.
pub fn bad_cursor() -> ApiError {
    ApiError::BadRequest(
        "_cursor is not a cursor of this search (follow the Bundle's next link)".into(),
    )
}

/// One `name[:modifier]=value` of the query string, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub modifier: Option<String>,
    pub value: String,
}

pub fn params(raw_query: Option<&str>) -> Vec<Param> {
    form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .map(|(key, value)| {
            let (name, modifier) = match key.split_once(':') {
                Some((name, modifier)) => (name.to_owned(), Some(modifier.to_owned())),
                None => (key.into_owned(), None),
            };
            Param {
                name,
                modifier,
                value: value.into_owned(),
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// A date search value: its prefix and the first and last day its precision covers
/// (`1980` is 1980-01-01..=1980-12-31).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateValue {
    pub prefix: Prefix,
    pub first: NaiveDate,
    pub last: NaiveDate,
}

pub fn date_value(raw: &str) -> Result<DateValue, String> {
    let raw = raw.trim();
    let (prefix, date) = match raw.get(..2) {
        Some("eq") => (Prefix::Eq, &raw[2..]),
        Some("ne") => (Prefix::Ne, &raw[2..]),
        Some("gt") | Some("sa") => (Prefix::Gt, &raw[2..]),
        Some("lt") | Some("eb") => (Prefix::Lt, &raw[2..]),
        Some("ge") => (Prefix::Ge, &raw[2..]),
        Some("le") => (Prefix::Le, &raw[2..]),
        Some("ap") => return Err("The prefix ap is not supported".into()),
        _ => (Prefix::Eq, raw),
    };
    let invalid = || {
        format!("Invalid date {raw:?}: use YYYY, YYYY-MM or YYYY-MM-DD with an optional prefix (eq, ne, gt, lt, ge, le)")
    };
    // A time part is allowed and ignored: birth dates are days.
    let date = date.split('T').next().unwrap_or("");
    let parts: Vec<&str> = date.split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (first, last) = match parts.as_slice() {
        [y] => {
            let year = number(y, 4).ok_or_else(invalid)? as i32;
            (
                NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(invalid)?,
                NaiveDate::from_ymd_opt(year, 12, 31).ok_or_else(invalid)?,
            )
        }
        [y, m] => {
            let first = NaiveDate::from_ymd_opt(
                number(y, 4).ok_or_else(invalid)? as i32,
                number(m, 2).ok_or_else(invalid)?,
                1,
            )
            .ok_or_else(invalid)?;
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .ok_or_else(invalid)?;
            (first, next.pred_opt().ok_or_else(invalid)?)
        }
        [y, m, d] => {
            let day = NaiveDate::from_ymd_opt(
                number(y, 4).ok_or_else(invalid)? as i32,
                number(m, 2).ok_or_else(invalid)?,
                number(d, 2).ok_or_else(invalid)?,
            )
            .ok_or_else(invalid)?;
            (day, day)
        }
        _ => return Err(invalid()),
    };
    debug_assert!(first.year() == last.year());
    Ok(DateValue {
        prefix,
        first,
        last,
    })
}

impl DateValue {
    /// The inclusive bounds a match must lie within (None: open), or for `ne` the range it
    /// must lie outside.
    pub fn bounds(&self) -> (Option<NaiveDate>, Option<NaiveDate>) {
        match self.prefix {
            Prefix::Eq | Prefix::Ne => (Some(self.first), Some(self.last)),
            Prefix::Ge => (Some(self.first), None),
            Prefix::Gt => (self.last.checked_add_days(Days::new(1)), None),
            Prefix::Le => (None, Some(self.last)),
            Prefix::Lt => (None, self.first.checked_sub_days(Days::new(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn partial_dates_cover_their_precision() {
        let year = date_value("1980").unwrap();
        assert_eq!(
            (year.first, year.last),
            (day("1980-01-01"), day("1980-12-31"))
        );
        let month = date_value("ge2024-02").unwrap();
        assert_eq!(month.prefix, Prefix::Ge);
        assert_eq!(
            (month.first, month.last),
            (day("2024-02-01"), day("2024-02-29"))
        );
        assert_eq!(
            date_value("lt1980-05-06").unwrap().bounds(),
            (None, Some(day("1980-05-05")))
        );
        assert_eq!(
            date_value("gt1980").unwrap().bounds(),
            (Some(day("1981-01-01")), None)
        );
        assert_eq!(
            date_value("le1980-02").unwrap().bounds(),
            (None, Some(day("1980-02-29")))
        );
        assert!(date_value("1980-13").is_err());
        assert!(date_value("80").is_err());
        assert!(date_value("ap1980").is_err());
        assert!(date_value("1980-02-30").is_err());
    }

    #[test]
    fn repeated_parameters_stay_apart() {
        let got = params(Some(
            "name=ann&name:exact=Ann%20Lee&birthdate=ge1980&birthdate=lt1990",
        ));
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].modifier.as_deref(), Some("exact"));
        assert_eq!(got[1].value, "Ann Lee");
        assert_eq!(got[3].value, "lt1990");
    }
}
