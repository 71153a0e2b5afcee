-- Core schema: users, patients, attachments. Never edit an applied migration; add a new one.

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    email           varchar(255) NOT NULL,
    hashed_password text NOT NULL,
    full_name       varchar(255),
    is_active       boolean NOT NULL DEFAULT true,
    is_superuser    boolean NOT NULL DEFAULT false,
    role            text NOT NULL DEFAULT 'clinician' CHECK (role IN ('clinician', 'viewer')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Emails are unique regardless of case: Alice@x.org and alice@x.org are one account.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_created_at_idx ON users (created_at DESC, id);

CREATE TABLE patients (
    id              uuid PRIMARY KEY,
    name            varchar(255) NOT NULL CHECK (length(btrim(name)) > 0),
    dob             date,
    contact_info    varchar(255),
    -- Unbounded: the original's varchar(255) turned long histories into 500s.
    medical_history text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attachments (
    id          uuid PRIMARY KEY,
    -- No ON DELETE CASCADE: deleting a patient deletes its attachments explicitly, in the same
    -- transaction that queues their S3 objects for deletion (the original left them in S3).
    patient_id  uuid NOT NULL REFERENCES patients (id),
    file_name   varchar(255) NOT NULL CHECK (length(file_name) > 0),
    mime_type   varchar(255) NOT NULL DEFAULT 'application/octet-stream',
    -- Made by the server, never from the file name.
    object_key  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_patient_id_idx ON attachments (patient_id);
