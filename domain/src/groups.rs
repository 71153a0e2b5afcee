//! Patient groups: named cohorts of patients (FHIR's Group, `type: person`, `actual: true`), so a
//! clinic can export one cohort's records. A member is a patient; a deleted patient leaves its
//! groups (the foreign key).

use chrono::{DateTime, Utc};
use shared::db::{DbPool, SqlParams};
use shared::trail::RouteEvent;
use shared::StoreError;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::paging::{self, Count, Keyset, Page, Position};

const GROUP: &str = "group";

pub const GROUP_CREATE: RouteEvent = RouteEvent::new("group.create", GROUP);
pub const GROUP_SEARCH: RouteEvent = RouteEvent::new("group.search", GROUP);
pub const GROUP_READ: RouteEvent = RouteEvent::new("group.read", GROUP).resource_from("id");
pub const GROUP_UPDATE: RouteEvent = RouteEvent::new("group.update", GROUP).resource_from("id");
pub const GROUP_DELETE: RouteEvent = RouteEvent::new("group.delete", GROUP).resource_from("id");

/// The most members a group holds: its resource (every member listed) stays well inside a
/// Lambda response's 6 MB.
pub const MAX_MEMBERS: usize = 20_000;

#[derive(Debug, Clone)]
pub struct Group {
    pub id: Uuid,
    pub name: String,
    /// In the order of their ids; None in a search's results (a group may list 20,000: a page
    /// of them would not fit an answer), which carry `quantity` only.
    pub members: Option<Vec<Uuid>>,
    pub quantity: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A group's name: trimmed, 1 to 255 characters.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupName(String);

impl TryFrom<String> for GroupName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        let name = raw.trim();
        match name.chars().count() {
            0 => Err("A group needs a name".into()),
            n if n > 255 => Err("A group's name has at most 255 characters".into()),
            _ => Ok(Self(name.to_owned())),
        }
    }
}

/// A group as written: its name and its members (each once, in any order).
#[derive(Debug, Clone)]
pub struct GroupWrite {
    pub name: GroupName,
    pub members: Vec<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no such group")]
    NotFound,
    /// A conditional write named a version the group is no longer at.
    #[error("the group changed since the version the write expected")]
    Stale,
    /// Members that name no patient.
    #[error("members that are not patients: {0:?}")]
    UnknownMembers(Vec<Uuid>),
    #[error("a group has at most {MAX_MEMBERS} members")]
    TooManyMembers,
    #[error(transparent)]
    Store(#[from] StoreError),
}

store_errors!(GroupError);

const COLUMNS: &str = "g.id, g.name, g.version, g.created_at, g.updated_at, \
     (SELECT count(*) FROM patient_group_members m WHERE m.group_id = g.id) AS quantity, \
     ARRAY(SELECT m.patient_id FROM patient_group_members m WHERE m.group_id = g.id \
           ORDER BY m.patient_id) AS members";

/// A search's columns: the members counted, not listed.
const SEARCH_COLUMNS: &str = "g.id, g.name, g.version, g.created_at, g.updated_at, \
     (SELECT count(*) FROM patient_group_members m WHERE m.group_id = g.id) AS quantity";

impl Group {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get(0),
            name: row.get(1),
            version: row.get(2),
            created_at: row.get(3),
            updated_at: row.get(4),
            quantity: row.get(5),
            members: (row.len() > 6).then(|| row.get(6)),
        }
    }
}

/// A member deleted between the check and the insert: the foreign key's refusal, as the
/// check's.
fn member_gone(error: tokio_postgres::Error) -> GroupError {
    if error.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
        GroupError::UnknownMembers(Vec::new())
    } else {
        error.into()
    }
}

impl GroupWrite {
    fn members(&self) -> Result<Vec<Uuid>, GroupError> {
        let mut members = self.members.clone();
        members.sort();
        members.dedup();
        if members.len() > MAX_MEMBERS {
            return Err(GroupError::TooManyMembers);
        }
        Ok(members)
    }
}

/// The members that name no patient, checked in the writing transaction (the foreign key holds
/// it anyway; this names them).
async fn unknown_members(
    client: &impl tokio_postgres::GenericClient,
    members: &[Uuid],
) -> Result<(), GroupError> {
    let unknown: Vec<Uuid> = client
        .query(
            "SELECT m FROM unnest($1::uuid[]) AS m WHERE NOT EXISTS \
             (SELECT 1 FROM patients p WHERE p.id = m) ORDER BY m",
            &[&members],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(GroupError::UnknownMembers(unknown))
    }
}

pub async fn create(pool: &DbPool, group: &GroupWrite) -> Result<Group, GroupError> {
    let members = group.members()?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    unknown_members(&*tx, &members).await?;
    let id = Uuid::new_v4();
    tx.execute(
        "INSERT INTO patient_groups (id, name) VALUES ($1, $2)",
        &[&id, &group.name.0],
    )
    .await?;
    add_members_and_commit(tx, id, &members).await
}

pub async fn find(pool: &DbPool, id: Uuid) -> Result<Option<Group>, StoreError> {
    let row = pool
        .get()
        .await?
        .query_opt(
            &format!("SELECT {COLUMNS} FROM patient_groups g WHERE g.id = $1"),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(Group::from_row))
}

/// Replaces the group's name and members; with `expected_version`, only from that version.
pub async fn update(
    pool: &DbPool,
    id: Uuid,
    group: &GroupWrite,
    expected_version: Option<i64>,
) -> Result<Group, GroupError> {
    let members = group.members()?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let version: i64 = tx
        .query_opt(
            "SELECT version FROM patient_groups WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(GroupError::NotFound)?
        .get(0);
    if expected_version.is_some_and(|expected| expected != version) {
        return Err(GroupError::Stale);
    }
    unknown_members(&*tx, &members).await?;
    tx.execute(
        "UPDATE patient_groups SET name = $2, version = version + 1, updated_at = now() \
         WHERE id = $1",
        &[&id, &group.name.0],
    )
    .await?;
    tx.execute(
        "DELETE FROM patient_group_members WHERE group_id = $1 AND patient_id <> ALL($2::uuid[])",
        &[&id, &members],
    )
    .await?;
    add_members_and_commit(tx, id, &members).await
}

/// Adds `members` the group lacks, reads the group back and commits: the end of a create or an
/// update.
async fn add_members_and_commit(
    tx: deadpool_postgres::Transaction<'_>,
    id: Uuid,
    members: &[Uuid],
) -> Result<Group, GroupError> {
    tx.execute(
        "INSERT INTO patient_group_members (group_id, patient_id) \
         SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
        &[&id, &members],
    )
    .await
    .map_err(member_gone)?;
    let row = tx
        .query_one(
            &format!("SELECT {COLUMNS} FROM patient_groups g WHERE g.id = $1"),
            &[&id],
        )
        .await?;
    tx.commit().await?;
    Ok(Group::from_row(&row))
}

/// Whether there was such a group.
pub async fn delete(pool: &DbPool, id: Uuid) -> Result<bool, StoreError> {
    Ok(pool
        .get()
        .await?
        .execute("DELETE FROM patient_groups WHERE id = $1", &[&id])
        .await?
        == 1)
}

/// What a search of groups keeps; every filter given holds (AND).
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    /// Names starting with each of these, in any case.
    pub name_starts: Vec<String>,
    /// Groups with each of these patients as a member.
    pub members: Vec<Uuid>,
    pub ids: Option<Vec<Uuid>>,
}

impl GroupFilter {
    fn sql(&self, params: &mut SqlParams) -> String {
        let mut clauses = Vec::new();
        for prefix in &self.name_starts {
            let escaped = prefix
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            clauses.push(format!(
                "lower(g.name) LIKE {} || '%'",
                params.push(escaped, Type::TEXT)
            ));
        }
        for member in &self.members {
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM patient_group_members m WHERE m.group_id = g.id \
                 AND m.patient_id = {})",
                params.push(*member, Type::UUID)
            ));
        }
        if let Some(ids) = &self.ids {
            clauses.push(format!(
                "g.id = ANY({})",
                params.push(ids.clone(), Type::UUID_ARRAY)
            ));
        }
        clauses.iter().map(|c| format!(" AND {c}")).collect()
    }
}

/// One page of the groups `filter` keeps, newest first.
pub async fn search(
    pool: &DbPool,
    filter: &GroupFilter,
    keyset: Keyset,
    limit: i64,
    count: Count,
) -> Result<Page<Group>, StoreError> {
    let mut params = SqlParams::new();
    let from_where = format!(
        "FROM patient_groups g WHERE true{}",
        filter.sql(&mut params)
    );
    let after = keyset
        .condition("g.created_at", "g.id", &mut params)
        .map(|condition| format!(" AND {condition}"))
        .unwrap_or_default();
    let order = keyset.order_by("g.created_at", "g.id");
    let page_sql = format!(
        "SELECT {SEARCH_COLUMNS} {from_where}{after} ORDER BY {order} LIMIT {}",
        params.push(limit + 1, Type::INT8)
    );
    let (rows, total) =
        paging::page_and_count(pool, &page_sql, &from_where, &params, count).await?;
    let mut items: Vec<Group> = rows.iter().map(Group::from_row).collect();
    let (previous, next) = keyset.page(&mut items, limit, |g| Position::at(g.created_at, g.id));
    Ok(Page {
        items,
        previous,
        next,
        total,
    })
}
