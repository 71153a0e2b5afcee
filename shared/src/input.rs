//! Untrusted text into domain types, with FastAPI's error shapes: a JSON body, query or form
//! parameters, a path id, one value at a located element. Every interface (the JSON API's
//! extractors, FHIR's elements) reads its input through these, so a rule is checked once.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// A JSON request body's bytes as `T`: 422 in FastAPI's shape for text that is not JSON, for
/// a document that is not an object, and for a field that breaks a rule.
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let document: serde_json::Value =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| json_error("body", e))?;
    // Every body is an object; serde would also read a struct from an array, positionally.
    if !document.is_object() {
        return Err(ApiError::validation(
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        ));
    }
    body_value(document)
}

/// A parsed JSON body as `T`: 422 in FastAPI's shape, `loc` the path of the field that breaks
/// a rule (`["body", "identifiers", 0, "system"]`); text holding NUL is refused (PostgreSQL
/// cannot store it).
fn body_value<T: DeserializeOwned>(document: serde_json::Value) -> Result<T, ApiError> {
    value_as(document, &["body".into()]).map_err(|error| ApiError::Validation(vec![error]))
}

/// One value as the domain type `T` (its own rules, as its `Deserialize` checks them), the
/// refusal located under `at` (a FHIR element: `["Patient", "birthDate"]`); text holding NUL is
/// refused. How every interface reads a value it hands to the domain.
pub fn value_as<T: DeserializeOwned>(
    value: serde_json::Value,
    at: &[serde_json::Value],
) -> Result<T, FieldError> {
    if let Some(loc) = find_nul(&value, at.to_vec()) {
        return Err(FieldError {
            loc,
            ..nul_field_error()
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (section, within) = at.split_first().map_or(("", &[][..]), |(first, rest)| {
            (first.as_str().unwrap_or(""), rest)
        });
        let mut path = within.to_vec();
        path.extend(path_segments(e.path()));
        field_error_from_message(section, path, &e.inner().to_string())
    })
}

/// Form-urlencoded text (a query string, a form body) as `T`; `section` is `query` or `body`.
pub fn urlencoded<T: DeserializeOwned>(section: &str, bytes: &[u8]) -> Result<T, ApiError> {
    // PostgreSQL text cannot hold NUL: refuse it here, naming the parameter, not as a 500 later.
    if let Some((key, _)) =
        form_urlencoded::parse(bytes).find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(nul_error(&[section, &key]));
    }
    // A repeated key is a 422 ("duplicate field"), not a silent pick of one value.
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = path_segments(e.path());
        let message = e.inner().to_string();
        ApiError::Validation(vec![field_error_from_message(section, path, &message)])
    })
}

fn nul_field_error() -> FieldError {
    FieldError {
        loc: Vec::new(),
        msg: "Text must not contain NUL (\\u0000) characters".into(),
        kind: "string_unicode".into(),
    }
}

fn nul_error(loc: &[&str]) -> ApiError {
    ApiError::Validation(vec![FieldError {
        loc: loc.iter().map(|s| serde_json::Value::from(*s)).collect(),
        ..nul_field_error()
    }])
}

/// The location of the first string (or key) holding a NUL character.
fn find_nul(
    value: &serde_json::Value,
    at: Vec<serde_json::Value>,
) -> Option<Vec<serde_json::Value>> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(at),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let mut loc = at.clone();
            loc.push(i.into());
            find_nul(item, loc)
        }),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            let mut loc = at.clone();
            loc.push(key.clone().into());
            if key.contains('\0') {
                Some(loc)
            } else {
                find_nul(item, loc)
            }
        }),
        _ => None,
    }
}

fn json_error(section: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::Validation(vec![FieldError {
            loc: vec![section.into(), inner.column().into()],
            msg: "JSON decode error".into(),
            kind: "json_invalid".into(),
        }]);
    }
    let path = path_segments(e.path());
    // serde_json appends " at line 1 column 42"; the location is already in `loc`.
    let message = inner.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    ApiError::Validation(vec![field_error_from_message(section, path, message)])
}

fn path_segments(path: &serde_path_to_error::Path) -> Vec<serde_json::Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some((*index).into()),
            Segment::Map { key } => Some(key.clone().into()),
            Segment::Enum { variant } => Some(variant.clone().into()),
            Segment::Unknown => None,
        })
        .collect()
}

/// Maps serde's messages onto FastAPI's error types; our own newtypes' messages pass through.
fn field_error_from_message(
    section: &str,
    mut path: Vec<serde_json::Value>,
    message: &str,
) -> FieldError {
    let mut loc = vec![serde_json::Value::from(section)];
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path.push(field.into());
        loc.extend(path);
        return FieldError {
            loc,
            msg: "Field required".into(),
            kind: "missing".into(),
        };
    }
    loc.extend(path);
    let kind = if message.starts_with("invalid type") {
        "type_error"
    } else if message.starts_with("unknown variant") || message.starts_with("invalid value") {
        "enum"
    } else if message.contains("invalid digit") || message.contains("invalid float") {
        "int_parsing"
    } else {
        "value_error"
    };
    FieldError {
        loc,
        msg: message.to_owned(),
        kind: kind.into(),
    }
}

/// Parses a UUID path parameter: a malformed one is 422 as in FastAPI, not 404.
pub fn parse_uuid(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::validation(
            &["path", name],
            "Input should be a valid UUID",
            "uuid_parsing",
        )
    })
}

/// For PATCH bodies: a field that is absent stays `None`, a field sent as `null` becomes
/// `Some(None)` (clear it), a value becomes `Some(Some(v))`. Use with `#[serde(default)]`.
pub fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `skip` and `limit` of every list, with FastAPI's 422 for values out of range.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Paging {
    #[serde(default)]
    pub skip: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
}

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

impl Paging {
    /// (offset, limit), checked: skip >= 0, 1 <= limit <= 1000 (default 100).
    pub fn checked(self) -> Result<(i64, i64), ApiError> {
        let skip = self.skip.unwrap_or(0);
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let mut errors = Vec::new();
        if skip < 0 {
            errors.push(FieldError::new(
                &["query", "skip"],
                "Input should be greater than or equal to 0",
                "greater_than_equal",
            ));
        }
        if !(1..=MAX_LIMIT).contains(&limit) {
            errors.push(FieldError::new(
                &["query", "limit"],
                format!("Input should be between 1 and {MAX_LIMIT}"),
                "less_than_equal",
            ));
        }
        if errors.is_empty() {
            Ok((skip, limit))
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}
