//! The attachments' one list, newest first: the JSON API's `/attachments/` pages (by offset,
//! for the replaced system's clients) and FHIR's DocumentReference search (by keyset) both
//! go through it.

use shared::db::{DbPool, SqlParams};
use shared::storage::Storage;
use shared::StoreError;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{refresh_pending, Attachment, ATTACHMENT_COLUMNS};
use crate::paging::{self, Count, Keyset, Page, Position, TimeRange};

/// What a list of attachments keeps; every filter given holds (AND).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttachmentFilter {
    /// Of one of these patients.
    pub patients: Option<Vec<Uuid>>,
    /// Of one of these MIME types (lower case).
    pub types: Option<Vec<String>>,
    /// Created within each of these ranges.
    pub created: Vec<TimeRange>,
}

impl AttachmentFilter {
    /// ` AND ...` over `attachments`, its values pushed onto `params`.
    pub fn sql(&self, params: &mut SqlParams) -> String {
        let mut clauses = Vec::new();
        if let Some(ids) = &self.patients {
            clauses.push(format!(
                "patient_id = ANY({})",
                params.push(ids.clone(), Type::UUID_ARRAY)
            ));
        }
        if let Some(types) = &self.types {
            clauses.push(format!(
                "mime_type = ANY({})",
                params.push(types.clone(), Type::TEXT_ARRAY)
            ));
        }
        clauses.extend(
            self.created
                .iter()
                .map(|range| range.condition("created_at", params)),
        );
        clauses.iter().map(|c| format!(" AND {c}")).collect()
    }
}

/// Which page of the list.
#[derive(Debug, Clone)]
pub enum Window {
    /// `limit` rows after the first `skip`.
    Offset { skip: i64, limit: i64 },
    /// `limit` rows from a keyset on.
    Keyset { keyset: Keyset, limit: i64 },
}

/// One page of the attachments `filter` keeps, newest first, counted as `count` asks (the
/// count and the page in one round trip), with pending uploads checked against the bucket.
pub async fn list(
    pool: &DbPool,
    storage: &Storage,
    filter: &AttachmentFilter,
    window: Window,
    count: Count,
) -> Result<Page<Attachment>, StoreError> {
    let mut params = SqlParams::new();
    let from_where = format!("FROM attachments WHERE true{}", filter.sql(&mut params));
    let page_sql = match &window {
        Window::Offset { skip, limit } => format!(
            "SELECT {ATTACHMENT_COLUMNS} {from_where} ORDER BY created_at DESC, id DESC \
             OFFSET {} LIMIT {}",
            params.push(*skip, Type::INT8),
            params.push(*limit, Type::INT8)
        ),
        Window::Keyset { keyset, limit } => {
            let after = keyset
                .condition("created_at", "id", &mut params)
                .map(|condition| format!(" AND {condition}"))
                .unwrap_or_default();
            let order = keyset.order_by("created_at", "id");
            format!(
                "SELECT {ATTACHMENT_COLUMNS} {from_where}{after} ORDER BY {order} LIMIT {}",
                // One row more says whether another page follows.
                params.push(limit + 1, Type::INT8)
            )
        }
    };
    let (rows, total) =
        paging::page_and_count(pool, &page_sql, &from_where, &params, count).await?;
    let mut items: Vec<Attachment> = rows.iter().map(Attachment::from_row).collect();
    let (previous, next) = match &window {
        Window::Offset { .. } => (None, None),
        Window::Keyset { keyset, limit } => {
            keyset.page(&mut items, *limit, |a| Position::at(a.created_at, a.id))
        }
    };
    refresh_pending(pool, storage, &mut items).await?;
    Ok(Page {
        items,
        previous,
        next,
        total,
    })
}
