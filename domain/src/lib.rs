//! CareVault's domain, one implementation for every interface (the JSON API, FHIR R4, and the
//! ones to come): each module holds a domain's model, the SQL on its tables, and its
//! operations. Interfaces parse their input into these types and map the typed errors to their
//! own answers.
//!
//! - `patients`: the record, its identifiers, search (filters, sort, paging, counts), and the
//!   writes (create, update, delete with the patient's files).
//! - `attachments`: files as stored, their S3 keys, upload creation and confirmation, deletion.
//! - `audit_events`: the audit trail as it is read back.
//! - `groups`: cohorts of patients (FHIR Group).
//! - `exports`: FHIR Bulk Data export jobs: kick-off, the snapshot they export, their chunks and
//!   files.
//! - `second_factors`: TOTP, recovery codes and passkeys, the policy that requires them, and
//!   the sign-in step between password and factor.
//! - `users`: accounts and their sessions (password hash, session epoch), and their writes.

/// The database's own failures (a pool that cannot connect, a statement that fails) as the
/// `Store` variant of a domain error, classified as the edge answers them.
macro_rules! store_errors {
    ($error:ty) => {
        impl From<tokio_postgres::Error> for $error {
            fn from(e: tokio_postgres::Error) -> Self {
                Self::Store(e.into())
            }
        }

        impl From<deadpool_postgres::PoolError> for $error {
            fn from(e: deadpool_postgres::PoolError) -> Self {
                Self::Store(e.into())
            }
        }
    };
}

pub mod attachments;
pub mod audit_events;
pub mod exports;
pub mod groups;
pub mod paging;
pub mod patients;
pub mod second_factors;
pub mod smart;
pub mod users;
