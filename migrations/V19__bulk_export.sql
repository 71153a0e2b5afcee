-- FHIR Bulk Data export (issue 27): cohorts of patients (FHIR Group), export jobs, their chunks
-- and files, and the rows each job exports, copied under one snapshot.

-- A cohort: FHIR's Group (type person, actual), members referencing patients. A deleted patient
-- leaves every group it was in.
CREATE TABLE patient_groups (
    id          uuid PRIMARY KEY,
    name        varchar(255) NOT NULL CHECK (length(btrim(name)) > 0),
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Newest first, keyset-paged; `name` (starts with, any case).
CREATE INDEX patient_groups_created_idx ON patient_groups (created_at DESC, id DESC);
CREATE INDEX patient_groups_name_idx ON patient_groups (lower(name) text_pattern_ops);

CREATE TABLE patient_group_members (
    group_id    uuid NOT NULL REFERENCES patient_groups (id) ON DELETE CASCADE,
    patient_id  uuid NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, patient_id)
);
-- `member=Patient/<id>`, and a patient's deletion.
CREATE INDEX patient_group_members_patient_idx ON patient_group_members (patient_id);

-- One export job. `owner` is who started it and alone may read or cancel it: `client:<id>` (a
-- SMART backend client) or `user:<id>` (a superuser's session). At most one job per owner is
-- accepted or running (the kick-off's 429 is this index's refusal, so two at once cannot race
-- past it).
CREATE TABLE bulk_exports (
    id               uuid PRIMARY KEY,
    owner            text NOT NULL,
    level            text NOT NULL CHECK (level IN ('system', 'patient', 'group')),
    group_id         uuid,
    types            text[] NOT NULL,
    since            timestamptz,
    -- _typeFilter, as the kick-off parsed it into the domain's searches (PlanFilters).
    type_filters     jsonb NOT NULL DEFAULT '[]',
    -- The kick-off's URL, as the manifest's `request` repeats it.
    request          text NOT NULL,
    -- The FHIR base the kick-off was sent to: exported DocumentReferences link their Binary
    -- under it, as the FHIR read does.
    fhir_base        text NOT NULL,
    -- cancelled: its owner cancelled it; the worker removes it with its rows and files.
    status           text NOT NULL
        CHECK (status IN ('accepted', 'running', 'completed', 'failed', 'cancelled')),
    -- OperationOutcome issues known at kick-off (types skipped under handling=lenient), written
    -- as the job's error file.
    issues           jsonb NOT NULL DEFAULT '[]',
    -- The snapshot's time: the export holds what was committed then, and nothing later.
    transaction_time timestamptz,
    chunks_total     integer,
    chunks_done      integer NOT NULL DEFAULT 0,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Its last progress (kick-off, plan, each chunk): a job accepted or running without progress
    -- for longer than every delivery of a step can take is failed, whatever became of it.
    touched_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    expires_at       timestamptz
);
CREATE UNIQUE INDEX bulk_exports_one_active_per_owner ON bulk_exports (owner)
    WHERE status IN ('accepted', 'running');
CREATE INDEX bulk_exports_expires_idx ON bulk_exports (expires_at) WHERE expires_at IS NOT NULL;

-- A job's unit of work: one resource type's rows `first_seq..=last_seq` of the copy below, one
-- SQS message. Done once, in the transaction that records its files.
CREATE TABLE bulk_export_chunks (
    export_id     uuid NOT NULL REFERENCES bulk_exports (id) ON DELETE CASCADE,
    chunk         integer NOT NULL,
    resource_type text NOT NULL,
    first_seq     bigint NOT NULL,
    last_seq      bigint NOT NULL,
    done_at       timestamptz,
    PRIMARY KEY (export_id, chunk)
);

-- The NDJSON files a job wrote (its manifest): `output` files of one resource type, `error`
-- files of OperationOutcomes.
CREATE TABLE bulk_export_files (
    export_id     uuid NOT NULL REFERENCES bulk_exports (id) ON DELETE CASCADE,
    object_key    text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('output', 'error')),
    resource_type text NOT NULL,
    chunk         integer,
    resources     bigint NOT NULL,
    bytes         bigint NOT NULL,
    checksum_sha256 text,
    PRIMARY KEY (export_id, object_key)
);

-- What a job exports, copied in one REPEATABLE READ transaction (one snapshot) when it is
-- planned: every worker reads its chunk from here, so the export is exactly the database as
-- of transaction_time whatever is written meanwhile, and a retried chunk reads the same rows.
-- The columns are those the domain's row mappings read (Patient::from_row with its
-- identifiers, Attachment::from_row); a chunk's rows go once it is written. UNLOGGED: a copy
-- that can be made again, not worth its WAL (docs/benchmarks.md, Bulk export). A crash or
-- failover empties them: a chunk then reads fewer rows than it was planned with and fails on
-- every delivery, so the job fails (its status says so) and never exports less than it holds.
CREATE UNLOGGED TABLE bulk_export_patients (
    export_id       uuid NOT NULL REFERENCES bulk_exports (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    id              uuid NOT NULL,
    name            text NOT NULL,
    dob             date,
    contact_info    text,
    medical_history text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint NOT NULL,
    identifiers     jsonb,
    PRIMARY KEY (export_id, seq)
);

CREATE UNLOGGED TABLE bulk_export_documents (
    export_id       uuid NOT NULL REFERENCES bulk_exports (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    id              uuid NOT NULL,
    patient_id      uuid NOT NULL,
    file_name       text NOT NULL,
    mime_type       text NOT NULL,
    status          text NOT NULL,
    size            bigint,
    etag            text,
    checksum_sha256 text,
    created_at      timestamptz NOT NULL,
    uploaded_at     timestamptz,
    object_key      text NOT NULL,
    declared_sha256 text,
    upload_id       text,
    declared_size   bigint,
    part_size       bigint,
    PRIMARY KEY (export_id, seq)
);

-- The trail is append-only: its events' ids are enough (a chunk reads the events themselves);
-- an event the retention purge removed meanwhile fails its chunk rather than go missing.
CREATE UNLOGGED TABLE bulk_export_audit_events (
    export_id     uuid NOT NULL REFERENCES bulk_exports (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    id            uuid NOT NULL,
    PRIMARY KEY (export_id, seq)
);

-- An export's transaction time: its snapshot's clock, or earlier, the start of the oldest write
-- transaction still running then (its rows carry their transaction's start as updated_at, yet
-- the snapshot does not see them: a later export `_since` this time must). SECURITY DEFINER:
-- only the owner reads every session's transaction start.
CREATE FUNCTION carevault_export_horizon() RETURNS timestamptz
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT least(clock_timestamp(), (
        SELECT min(xact_start) FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()))
$$;
REVOKE ALL ON FUNCTION carevault_export_horizon() FROM PUBLIC;

DO $$
BEGIN
    CREATE ROLE carevault_bulk_export NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA public TO carevault_bulk_export;

-- fhir: Group, and the export's kick-off, status and cancel (the planning and the chunks are
-- the worker's).
GRANT SELECT, INSERT, UPDATE, DELETE ON patient_groups, patient_group_members TO carevault_fhir;
GRANT SELECT, INSERT, UPDATE, DELETE ON bulk_exports TO carevault_fhir;
GRANT SELECT ON bulk_export_chunks, bulk_export_files TO carevault_fhir;
-- The worker reads what it exports (never writes it), and runs the jobs.
GRANT SELECT ON patients, patient_identifiers, attachments, audit_events, patient_groups,
    patient_group_members TO carevault_bulk_export;
-- DELETE: a cancelled job's clean-up step.
GRANT SELECT, UPDATE, DELETE ON bulk_exports TO carevault_bulk_export;
GRANT SELECT, INSERT, UPDATE, DELETE ON bulk_export_chunks, bulk_export_files,
    bulk_export_patients, bulk_export_documents, bulk_export_audit_events
    TO carevault_bulk_export;
GRANT INSERT ON audit_events TO carevault_bulk_export;
GRANT EXECUTE ON FUNCTION carevault_export_horizon() TO carevault_bulk_export, carevault_app;
-- A deployment whose functions share one login.
GRANT SELECT, INSERT, UPDATE, DELETE ON patient_groups, patient_group_members, bulk_exports,
    bulk_export_chunks, bulk_export_files, bulk_export_patients, bulk_export_documents,
    bulk_export_audit_events TO carevault_app;
