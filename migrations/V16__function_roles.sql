-- One role per function group, each granted only what that group's statements need (issue 25:
-- the utils or audit function must not be able to update users.is_superuser if compromised).
-- Each function's database login is made a member of its group's role by the migrate function
-- (from its own secret, in AWS). carevault_app, the earlier single role, keeps its grants for a
-- deployment whose functions still share one login (ExistingDatabaseSecretArn).
-- Every later migration that adds a table grants on it to the roles that use it.
-- Roles belong to the whole server: another database's migration may create them at the same
-- time.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['carevault_utils', 'carevault_auth', 'carevault_users',
        'carevault_patients', 'carevault_attachments', 'carevault_attachment_events',
        'carevault_audit', 'carevault_fhir']
    LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA public TO carevault_utils, carevault_auth, carevault_users,
    carevault_patients, carevault_attachments, carevault_attachment_events, carevault_audit,
    carevault_fhir;

-- Who the bearer token names, without the password hash: every function that checks tokens.
GRANT SELECT (id, email, full_name, is_active, is_superuser, role, created_at, session_epoch)
    ON users TO carevault_patients, carevault_attachments, carevault_audit, carevault_fhir;

-- The trail: every audited function writes events and counts token-less refusals.
GRANT INSERT ON audit_events TO carevault_auth, carevault_users, carevault_patients,
    carevault_attachments, carevault_attachment_events, carevault_audit, carevault_fhir;
GRANT SELECT, INSERT, UPDATE ON audit_refusals TO carevault_auth, carevault_users,
    carevault_patients, carevault_attachments, carevault_audit, carevault_fhir;
-- Reading it back: the JSON API's list and FHIR's AuditEvent.
GRANT SELECT ON audit_events TO carevault_audit, carevault_fhir;

-- auth: sign-in (password checks and rehashes), logout everywhere (the session epoch), password
-- recovery and reset; never creates, deletes or promotes anyone.
GRANT SELECT ON users TO carevault_auth;
GRANT UPDATE (hashed_password, session_epoch, updated_at) ON users TO carevault_auth;
GRANT SELECT, INSERT, UPDATE, DELETE ON login_throttle, login_failures, recovery_emails
    TO carevault_auth;

-- users: account management; a wrong current password counts like a failed login.
GRANT SELECT, INSERT, UPDATE, DELETE ON users TO carevault_users;
GRANT SELECT, INSERT, UPDATE, DELETE ON login_throttle, login_failures TO carevault_users;

-- Patients and their identifiers: the JSON API's patients and FHIR's Patient. Deleting a
-- patient deletes its attachments and queues their objects and open uploads.
GRANT SELECT, INSERT, UPDATE, DELETE ON patients, patient_identifiers
    TO carevault_patients, carevault_fhir;
GRANT SELECT, UPDATE ON patient_totals TO carevault_patients, carevault_fhir;
GRANT SELECT ON patients TO carevault_attachments, carevault_attachment_events;

-- Attachments, their uploads and the deletion queues. A patient's deletion reads and deletes
-- its attachments (their upload parts go by the foreign key, run as the owner) and queues
-- their objects and open uploads (the delete trigger inserts the abort); the S3 notifications
-- and the sweep confirm, flag and delete, never create.
GRANT SELECT, INSERT, UPDATE, DELETE ON attachments, upload_parts
    TO carevault_attachments, carevault_fhir;
GRANT SELECT, UPDATE, DELETE ON attachments, upload_parts TO carevault_attachment_events;
GRANT SELECT, DELETE ON attachments TO carevault_patients;
GRANT SELECT, INSERT, UPDATE, DELETE ON multipart_aborts, object_deletions
    TO carevault_patients, carevault_attachments, carevault_attachment_events, carevault_fhir;
GRANT SELECT, UPDATE ON bucket_sweep TO carevault_attachment_events;
