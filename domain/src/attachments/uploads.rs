//! A multipart upload's signed parts: the SHA-256 each part URL was signed for (the
//! `upload_parts` table, from which the object's composite checksum is computed and a stored
//! part's digest is kept immutable), and who opened the upload.

use std::collections::HashMap;

use shared::audit::LoggedRows;
use shared::db::{DbPool, SqlParams};
use shared::domain::Sha256Digest;
use shared::trail::AuditEntry;
use shared::StoreError;
use tokio_postgres::types::Type;
use uuid::Uuid;

/// The digests part URLs of attachment `id` were signed for, by part number (base64).
pub async fn signed_digests(pool: &DbPool, id: Uuid) -> Result<HashMap<i32, String>, StoreError> {
    let client = pool.get().await?;
    Ok(digests_on(&client, id).await?)
}

async fn digests_on(
    client: &tokio_postgres::Client,
    id: Uuid,
) -> Result<HashMap<i32, String>, tokio_postgres::Error> {
    Ok(client
        .query_typed(
            "SELECT part_number, sha256 FROM upload_parts WHERE attachment_id = $1",
            &[(&id, Type::UUID)],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Who opened the upload of attachment `id` (None for uploads from before owners were
/// recorded) and the digests its part URLs were signed for: what deciding whether to sign more
/// parts needs, pipelined on one connection.
pub async fn signing_state(
    pool: &DbPool,
    id: Uuid,
) -> Result<(Option<Uuid>, HashMap<i32, String>), StoreError> {
    let client = pool.get().await?;
    let param = [(
        &id as &(dyn tokio_postgres::types::ToSql + Sync),
        Type::UUID,
    )];
    let (owner, signed) = tokio::try_join!(
        client.query_typed_opt("SELECT created_by FROM attachments WHERE id = $1", &param),
        client.query_typed(
            "SELECT part_number, sha256 FROM upload_parts WHERE attachment_id = $1",
            &param,
        ),
    )?;
    Ok((
        owner.and_then(|row| row.get(0)),
        signed.iter().map(|row| (row.get(0), row.get(1))).collect(),
    ))
}

/// Records the digest each part is signed for and moves the upload's activity on (so an upload
/// of any duration stays alive while its client works), with the audit event, in one
/// statement. False when the upload is no longer open (completed or deleted meanwhile): no
/// part URL is then to be handed out.
pub async fn record_signed_parts(
    pool: &DbPool,
    audit: &AuditEntry,
    id: Uuid,
    parts: &[(i32, Sha256Digest)],
) -> Result<bool, StoreError> {
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let numbers = params.push(
        parts.iter().map(|(n, _)| *n).collect::<Vec<i32>>(),
        Type::INT4_ARRAY,
    );
    let digests = params.push(
        parts
            .iter()
            .map(|(_, d)| d.base64())
            .collect::<Vec<String>>(),
        Type::TEXT_ARRAY,
    );
    let logged = audit.logged_cte(
        &mut params,
        &LoggedRows {
            source: "active",
            resource: "id",
            patient: "patient_id",
            details: None,
        },
    );
    let recorded = pool
        .get()
        .await?
        .query_typed_opt(
            &format!(
                "WITH active AS (
                    UPDATE attachments SET upload_activity_at = now()
                    WHERE id = {id} AND status = 'pending' AND upload_id IS NOT NULL
                    RETURNING id, patient_id
                 ), signed AS (
                    INSERT INTO upload_parts (attachment_id, part_number, sha256)
                    SELECT a.id, p.number, p.digest FROM active a,
                        unnest({numbers}::int[], {digests}::text[]) AS p(number, digest)
                    ON CONFLICT (attachment_id, part_number)
                    DO UPDATE SET sha256 = excluded.sha256, signed_at = now()
                 ), {logged}
                 SELECT id FROM active"
            ),
            &params.typed(),
        )
        .await?;
    Ok(recorded.is_some())
}
