-- A request refused without a valid token (no token, a forged or expired one) is counted, not
-- kept as an event of its own: one row per minute, route action and source address, with the
-- count and the last user agent. Anyone can send such requests at the gateway's limits, and one
-- append-only row each would bury the real events and grow storage by millions of rows a day.
-- Refusals of a valid token's user, and every access to patient data, keep their own events.
CREATE TABLE audit_refusals (
    minute     timestamptz NOT NULL,
    action     text NOT NULL,
    source_ip  text NOT NULL,
    refusals   integer NOT NULL,
    user_agent text,
    PRIMARY KEY (minute, action, source_ip)
);

GRANT SELECT, INSERT, UPDATE ON audit_refusals TO carevault_app;

-- Retention: the counts go with the events of the same age.
CREATE OR REPLACE FUNCTION carevault_purge_audit_events(keep interval) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM set_config('carevault.audit_purge', 'on', true);
    DELETE FROM audit_events WHERE occurred_at < now() - keep;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('carevault.audit_purge', 'off', true);
    DELETE FROM audit_refusals WHERE minute < now() - keep;
    RETURN removed;
END;
$$;
