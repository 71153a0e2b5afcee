//! Recovery codes: ten codes of 80 random bits (`xxxx-xxxx-xxxx-xxxx`, base32), shown once,
//! stored as their SHA-256 (`shared::opaque`'s reasoning: random values need no slow hash),
//! each good once. They stand in for a lost factor.

use shared::db::DbPool;
use shared::trail::AuditEntry;
use uuid::Uuid;

use super::FactorError;

pub const CODES: usize = 10;
const CODE_BYTES: usize = 10;

/// A new code as the user sees it.
fn new_code() -> Result<String, FactorError> {
    let mut bytes = [0u8; CODE_BYTES];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| FactorError::Internal("the system's random source failed".into()))?;
    let text =
        base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &bytes).to_ascii_lowercase();
    let groups: Vec<&str> = text
        .as_bytes()
        .chunks(4)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    Ok(groups.join("-"))
}

/// A code as typed, in the form it was stored: case, spaces and dashes do not matter.
fn normal_form(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn digest(code: &str) -> Vec<u8> {
    shared::opaque::digest(&normal_form(code))
}

/// Inside a transaction: the user's codes replaced by ten new ones, returned as shown.
pub(crate) async fn replace_in(
    tx: &tokio_postgres::Transaction<'_>,
    user_id: Uuid,
) -> Result<Vec<String>, FactorError> {
    let codes = (0..CODES)
        .map(|_| new_code())
        .collect::<Result<Vec<_>, _>>()?;
    let digests: Vec<Vec<u8>> = codes.iter().map(|c| digest(c)).collect();
    tx.execute(
        "DELETE FROM user_recovery_codes WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    tx.execute(
        "INSERT INTO user_recovery_codes (user_id, code_digest)
         SELECT $1, d FROM unnest($2::bytea[]) AS d",
        &[&user_id, &digests],
    )
    .await?;
    Ok(codes)
}

/// New codes for a user who has a factor (the caller checked password and code), with the
/// event, in one transaction. Sessions go on: codes are not a factor of their own.
pub async fn regenerate(
    pool: &DbPool,
    audit: &AuditEntry,
    user_id: Uuid,
) -> Result<Vec<String>, FactorError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let codes = replace_in(&tx, user_id).await?;
    audit.describe(|event| event.resource(Some(user_id)));
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok(codes)
}

/// Spends `code` if it is one of the user's unused codes; true when it was.
pub async fn accept(pool: &DbPool, user_id: Uuid, code: &str) -> Result<bool, FactorError> {
    if normal_form(code).len() != CODE_BYTES * 8 / 5 {
        return Ok(false);
    }
    let spent = pool
        .get()
        .await?
        .execute(
            "UPDATE user_recovery_codes SET used_at = now()
             WHERE user_id = $1 AND code_digest = $2 AND used_at IS NULL",
            &[&user_id, &digest(code)],
        )
        .await?;
    Ok(spent == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_four_groups_of_four_and_typed_forms_match() {
        let code = new_code().unwrap();
        assert_eq!(code.len(), 19);
        assert_eq!(code.split('-').count(), 4);
        assert_eq!(
            digest(&code),
            digest(&code.to_uppercase().replace('-', " "))
        );
        assert_ne!(digest(&code), digest(&new_code().unwrap()));
    }
}
