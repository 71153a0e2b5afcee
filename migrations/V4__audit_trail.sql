-- The audit trail (HIPAA 45 CFR 164.312(b)): who read or changed what, when, from where.
-- Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE for everyone, the owner included,
-- except the retention purge below; the application role may only INSERT and SELECT.

CREATE TABLE audit_events (
    id            uuid PRIMARY KEY,
    occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id      uuid,
    actor_email   text,
    action        text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('success', 'denied', 'not_found', 'invalid')),
    resource_type text NOT NULL,
    resource_id   uuid,
    patient_id    uuid,
    request_id    text,
    source_ip     text,
    user_agent    text,
    details       jsonb NOT NULL DEFAULT '{}'
);

-- Newest first, keyset-paginated on (occurred_at, id), for every filter.
CREATE INDEX audit_events_occurred_idx ON audit_events (occurred_at DESC, id DESC);
CREATE INDEX audit_events_patient_idx ON audit_events (patient_id, occurred_at DESC, id DESC) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, occurred_at DESC, id DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_events_action_idx ON audit_events (action, occurred_at DESC, id DESC);
CREATE INDEX audit_events_outcome_idx ON audit_events (outcome, occurred_at DESC, id DESC);

CREATE FUNCTION carevault_audit_is_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('carevault.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION carevault_audit_is_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_audit_is_append_only();

-- Retention: removes events older than `keep`. Only the schema owner (the migrate function) may
-- run it; it runs on the schedule in template.yaml.
CREATE FUNCTION carevault_purge_audit_events(keep interval) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM set_config('carevault.audit_purge', 'on', true);
    DELETE FROM audit_events WHERE occurred_at < now() - keep;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('carevault.audit_purge', 'off', true);
    RETURN removed;
END;
$$;
REVOKE ALL ON FUNCTION carevault_purge_audit_events(interval) FROM PUBLIC;

-- The application role: what the API functions' database user is granted (through membership).
-- Every later migration that adds a table grants on it here too.
-- Roles belong to the whole server: another database's migration may create it at the same time.
DO $$
BEGIN
    CREATE ROLE carevault_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA public TO carevault_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON users, patients, attachments, object_deletions TO carevault_app;
GRANT SELECT, INSERT ON audit_events TO carevault_app;
GRANT EXECUTE ON FUNCTION carevault_fold(text), carevault_prefix_query(text) TO carevault_app;
