//! Domain types that can only hold valid values. They deserialize through their `parse`
//! (`#[serde(try_from = "String")]`), so a request body that holds an invalid value is a 422
//! naming the field, before any handler runs.

use serde::{Deserialize, Serialize};

/// An email address: syntactically valid, at most 255 characters, surrounding space trimmed.
/// Stored as given; compared case-insensitively (the database's unique index is on lower(email)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: String) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.chars().count() > 255 {
            return Err("value is not a valid email address: at most 255 characters".into());
        }
        // A domain with a dot, as FastAPI's email-validator requires; no display names.
        let valid = email_address::EmailAddress::is_valid(trimmed)
            && !trimmed.contains(['<', '>', ' '])
            && trimmed
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.contains('.'));
        if !valid {
            return Err("value is not a valid email address".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl std::fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;

/// A new password: 8 to 128 characters. Never printed: `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, String> {
        let chars = raw.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(format!(
                "String should have at least {PASSWORD_MIN_CHARS} characters"
            ));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(format!(
                "String should have at most {PASSWORD_MAX_CHARS} characters"
            ));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Password {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// What a non-superuser may do with patient data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and writes patients and attachments. The default.
    Clinician,
    /// Reads, searches and downloads only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clinician => "clinician",
            Self::Viewer => "viewer",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "viewer" => Self::Viewer,
            _ => Self::Clinician,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(EmailAddress::parse("admin@example.com".into()).is_ok());
        assert_eq!(
            EmailAddress::parse("  a@b.co ".into()).unwrap().as_str(),
            "a@b.co"
        );
        for bad in ["", "plain", "a@b", "a b@c.com", "Name <a@b.com>", "@b.com"] {
            assert!(EmailAddress::parse(bad.into()).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(long).is_err());
    }

    #[test]
    fn passwords() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert_eq!(
            format!("{:?}", Password::parse("secret-pass".into()).unwrap()),
            "Password(<redacted>)"
        );
    }
}

/// A person's display name: at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct FullName(String);

impl FullName {
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.chars().count() > 255 {
            return Err("String should have at most 255 characters".into());
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FullName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

/// A SHA-256 digest as S3 takes it in `x-amz-checksum-sha256`: standard base64 of the 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    pub fn parse(raw: String) -> Result<Self, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| "Value error, sha256 must be the base64 of a SHA-256 digest".to_owned())?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| {
            "Value error, sha256 must be the base64 of a SHA-256 digest (32 bytes)".to_owned()
        })?;
        Ok(Self(digest))
    }

    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(bytes).into())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `x-amz-checksum-sha256`'s form.
    pub fn base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// `x-amz-content-sha256`'s form: lower-case hex.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// S3's composite checksum of a multipart object: the SHA-256 of the parts' digests in
    /// part order, base64, then `-` and the number of parts.
    pub fn composite(parts: &[Sha256Digest]) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for part in parts {
            hasher.update(part.0);
        }
        format!(
            "{}-{}",
            Self(hasher.finalize().into()).base64(),
            parts.len()
        )
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Sha256Digest> for String {
    fn from(value: Sha256Digest) -> Self {
        value.base64()
    }
}

/// An integer as JSON Schema and FastAPI take it: `12`, or `12.0` (a number without a
/// fractional part), never `12.5` or `"12"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub i64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let number = serde_json::Number::deserialize(deserializer)?;
        if let Some(whole) = number.as_i64() {
            return Ok(Self(whole));
        }
        match number.as_f64() {
            // Beyond 2^53 a float holds no exact integer.
            Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Ok(Self(f as i64)),
            Some(f) if f.fract() != 0.0 => Err(D::Error::custom(
                "Input should be a valid integer, got a number with a fractional part",
            )),
            _ => Err(D::Error::custom(
                "Input should be a valid integer, the number is too large",
            )),
        }
    }
}
