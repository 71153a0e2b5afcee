//! FHIR search parameters as sent: the raw query string (API Gateway joins repeated parameters
//! with commas in `queryStringParameters`, which would turn AND into OR), names with their
//! modifier, and dates with their prefix and precision.

use axum::http::HeaderMap;
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use domain::paging::{Count, Keyset, List, TimeRange};
use shared::ApiError;

/// `_count` when none is given, and the most a page holds.
pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 200;

/// What every search takes besides its own parameters: `_count` (clamped), `_cursor`,
/// `_total`, `_format`; and what it cannot apply. Searches are strict by default, as HAPI's and
/// Medplum's are: a search that dropped a parameter would widen silently (an app asking for one
/// patient's documents would show others'). `Prefer: handling=lenient` ignores unknown
/// parameters; an unsupported modifier of a known one is refused either way.
pub struct Common {
    pub count: i64,
    pub cursor: Option<String>,
    /// `_total` as asked (`accurate` is an exact count); each resource says what it does when
    /// none is asked.
    pub total: Option<Count>,
    /// Parameters the search does not know (chained ones, `_include`, `_has`... included), as
    /// sent (`name:modifier`).
    pub unknown: Vec<String>,
    /// Known parameters with a modifier the search does not support, or chained.
    unsupported: Vec<String>,
    /// The resource's own parameter names.
    known: &'static [&'static str],
}

/// The parameters every search takes.
const COMMON: [&str; 4] = ["_count", "_cursor", "_total", "_format"];

impl Common {
    /// For a search whose own parameters are `known`.
    pub fn new(known: &'static [&'static str]) -> Self {
        Self {
            count: DEFAULT_COUNT,
            cursor: None,
            total: None,
            unknown: Vec::new(),
            unsupported: Vec::new(),
            known,
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
                self.total = Some(match value {
                    "none" => Count::None,
                    "estimate" => Count::Estimate,
                    "accurate" => Count::Exact,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "_total takes none, estimate or accurate, not {other:?}"
                        )))
                    }
                })
            }
            // How the answer is shaped, not what it holds; only JSON is served.
            ("_format", None) if value.contains("json") => {}
            ("_format", None) => {
                return Err(ApiError::BadParameter {
                    parameter: "_format".into(),
                    detail: format!("Only JSON is served (_format=json), not {value:?}"),
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Notes a parameter the search cannot apply: a known one with a modifier it does not
    /// support, or one it does not know.
    pub fn unknown(&mut self, param: &Param) {
        let name = match &param.modifier {
            Some(m) => format!("{}:{m}", param.name),
            None => param.name.clone(),
        };
        // A chained parameter (`patient.identifier`) names its known parameter first: it would
        // narrow that one, so dropping it would widen the search.
        let base = param.name.split('.').next().unwrap_or("");
        let chained = base.len() < param.name.len();
        let known = COMMON.contains(&base) || self.known.contains(&base);
        if known && (param.modifier.is_some() || chained) {
            self.unsupported.push(name);
        } else {
            self.unknown.push(name);
        }
    }

    /// What the search could not apply: unsupported modifiers, then unknown parameters.
    pub fn not_applied(&self) -> Vec<String> {
        self.unsupported
            .iter()
            .chain(&self.unknown)
            .cloned()
            .collect()
    }

    /// 400 for an unsupported modifier; for an unknown parameter too, unless the client sent
    /// `Prefer: handling=lenient`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let lenient = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split([',', ';']).any(|p| p.trim() == "handling=lenient"));
        self.refuse(lenient)
    }

    /// 400 for what cannot be applied (with `lenient`, unknown parameters pass); the first
    /// such parameter named as the OperationOutcome's location.
    pub fn refuse(&self, lenient: bool) -> Result<(), ApiError> {
        if let Some(first) = self.unsupported.first() {
            return Err(ApiError::BadParameter {
                parameter: first.clone(),
                detail: format!(
                    "Unsupported search modifier: {} (see /fhir/R4/metadata for what is supported)",
                    self.unsupported.join(", ")
                ),
            });
        }
        match self.unknown.first() {
            Some(first) if !lenient => Err(ApiError::BadParameter {
                parameter: first.clone(),
                detail: format!(
                    "Unknown search parameters: {} (see /fhir/R4/metadata; Prefer: handling=lenient ignores them)",
                    self.unknown.join(", ")
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// The page of `list` a `_cursor` names, or a 400 for a cursor this search did not make.
pub fn keyset(cursor: Option<&str>, list: List) -> Result<Keyset, ApiError> {
    Keyset::of(list, cursor).map_err(|_| {
        ApiError::BadRequest(
            "_cursor is not a cursor of this search (follow the Bundle's next link)".into(),
        )
    })
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

/// An instant search value (`_lastUpdated`): its prefix and the half-open range
/// `[start, end)` its precision covers, in UTC. A day or coarser is a range of UTC days; a time
/// needs its offset (`Z` or `+hh:mm`) and covers its second (or its fraction's precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstantValue {
    pub prefix: Prefix,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

pub fn instant_value(raw: &str) -> Result<InstantValue, String> {
    let raw = raw.trim();
    let Some((before_t, time_text)) = raw.split_once('T') else {
        let date = date_value(raw)?;
        let midnight = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = date
            .last
            .checked_add_days(Days::new(1))
            .ok_or("Invalid date")?;
        return Ok(InstantValue {
            prefix: date.prefix,
            start: midnight(date.first),
            end: midnight(end),
        });
    };
    let invalid = || {
        format!("Invalid instant {raw:?}: use YYYY-MM-DDThh:mm:ss with Z or an offset, with an optional prefix")
    };
    let day = date_value(before_t)?;
    // The date is a whole day written as YYYY-MM-DD right before the T (after any prefix):
    // nothing between them, so the instant is that text and the time, never a guessed offset.
    let date_text = day.first.format("%Y-%m-%d").to_string();
    if day.first != day.last || !before_t.ends_with(&date_text) {
        return Err(invalid());
    }
    let instant = format!("{date_text}T{time_text}");
    let parsed = DateTime::parse_from_rfc3339(&instant)
        .or_else(|_| {
            // hh:mm without seconds, as FHIR's search allows.
            let (time, offset) = time_text
                .find(['Z', 'z', '+', '-'])
                .map(|at| time_text.split_at(at))
                .ok_or(())?;
            if time.len() != 5 {
                return Err(());
            }
            DateTime::parse_from_rfc3339(&format!("{date_text}T{time}:00{offset}")).map_err(|_| ())
        })
        .map_err(|_| invalid())?
        .with_timezone(&Utc);
    let digits = instant
        .split_once('.')
        .map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count() as u32)
        .unwrap_or(0)
        .min(6);
    let precision = chrono::Duration::microseconds(10_i64.pow(6 - digits));
    Ok(InstantValue {
        prefix: day.prefix,
        start: parsed,
        end: parsed + precision,
    })
}

impl InstantValue {
    /// The time range a match must lie within (for `ne`, outside).
    pub fn range(&self) -> TimeRange {
        let (from, before) = self.bounds();
        TimeRange {
            from,
            before,
            outside: self.prefix == Prefix::Ne,
        }
    }

    /// The range a match must lie within, `[from, before)` (None: open), or for `ne` the range
    /// it must lie outside.
    pub fn bounds(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self.prefix {
            Prefix::Eq | Prefix::Ne => (Some(self.start), Some(self.end)),
            Prefix::Ge => (Some(self.start), None),
            Prefix::Gt => (Some(self.end), None),
            Prefix::Le => (None, Some(self.end)),
            Prefix::Lt => (None, Some(self.start)),
        }
    }
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
    fn instants_with_multibyte_text_around_the_t_are_refused_not_a_panic() {
        for raw in [
            "2024-01-01\u{3000}\u{3000}\u{3000}\u{3000}T00:00Z",
            "ge2024-01-01\u{3000}T00:00Z",
            "\u{3000}2024-01-01T00:00Z\u{3000}x",
            "2024-01-01T\u{3000}\u{3000}:00Z",
            "2024-01-01T00:00\u{0301}Z",
            "2024-01-01T00\u{10FFFF}00+01:00",
            "é2024-01-01T00:00:00Z",
            "2024-01-01TT",
            "T",
            "geT",
        ] {
            assert!(instant_value(raw).is_err(), "{raw:?} was accepted");
        }
        assert!(instant_value("\u{3000}2024-01-01T00:00Z\u{3000}").is_ok());
    }

    #[test]
    fn instants_cover_their_precision() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let day = instant_value("gt2024-03-01").unwrap();
        assert_eq!(day.bounds(), (Some(at("2024-03-02T00:00:00Z")), None));
        let second = instant_value("ge2024-03-01T10:20:30+02:00").unwrap();
        assert_eq!(second.start, at("2024-03-01T08:20:30Z"));
        assert_eq!(second.end, at("2024-03-01T08:20:31Z"));
        let milli = instant_value("2024-03-01T10:20:30.123Z").unwrap();
        assert_eq!(milli.end - milli.start, chrono::Duration::milliseconds(1));
        let minute = instant_value("lt2024-03-01T10:20Z").unwrap();
        assert_eq!(minute.bounds(), (None, Some(at("2024-03-01T10:20:00Z"))));
        for bad in [
            "2024-03-01T10:20:30",
            "2024-03T10:00:00Z",
            "2024-03-01T25:00:00Z",
            "x",
        ] {
            assert!(instant_value(bad).is_err(), "{bad}");
        }
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

#[cfg(test)]
mod common_tests {
    use super::*;

    #[test]
    fn an_unknown_parameter_is_refused_unless_lenient() {
        let mut common = Common::new(&["patient"]);
        for param in params(Some("colour=blue")) {
            assert!(!common.take(&param).unwrap());
            common.unknown(&param);
        }
        assert!(common.check(&HeaderMap::new()).is_err());
        let mut lenient = HeaderMap::new();
        lenient.insert("prefer", "handling=lenient".parse().unwrap());
        assert!(common.check(&lenient).is_ok());
    }
}
