-- Patient search served by indexes, optimistic concurrency, and the S3 deletion queue.
-- Both extensions ship with PostgreSQL's contrib package and are allowed on RDS and Aurora.
CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;

-- Case- and accent-folding, IMMUTABLE so that generated columns and indexes can use it.
-- (unaccent() itself is only STABLE because its dictionary could change; ours does not.)
CREATE FUNCTION carevault_fold(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN lower(public.unaccent('public.unaccent'::regdictionary, value));

-- The words of a search box as a prefix query: 'jo smi' -> 'jo':* & 'smi':*, split by the same
-- parser as the indexed names, so any input (quotes, operators, unicode) is only ever words.
CREATE FUNCTION carevault_prefix_query(input text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN (
        SELECT to_tsquery('simple', string_agg(
            '''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || ''':*', ' & '))
        FROM unnest(tsvector_to_array(to_tsvector('simple', carevault_fold(input)))) AS lexeme
    );

ALTER TABLE patients
    ADD COLUMN version bigint NOT NULL DEFAULT 1,
    ADD COLUMN name_search tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', carevault_fold(name))) STORED,
    ADD COLUMN history_search tsvector
        GENERATED ALWAYS AS (to_tsvector('english', coalesce(medical_history, ''))) STORED;

CREATE INDEX patients_name_search_idx ON patients USING gin (name_search);
CREATE INDEX patients_history_search_idx ON patients USING gin (history_search);
-- Sorting and paging by each sort key (ties broken by id), name_exact, and the dob range.
CREATE INDEX patients_name_id_idx ON patients (name, id);
CREATE INDEX patients_dob_id_idx ON patients (dob, id);
CREATE INDEX patients_created_at_id_idx ON patients (created_at, id);

CREATE INDEX attachments_mime_type_patient_id_idx ON attachments (mime_type, patient_id);

-- S3 objects whose rows are gone: written in the same transaction as the row deletes, removed
-- once the objects are deleted, retried on a schedule when S3 could not be reached.
CREATE TABLE object_deletions (
    object_key text PRIMARY KEY,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
