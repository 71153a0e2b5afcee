-- A request whose handler panicked answers 500 and is audited as 'error': it may have read
-- records before it failed (issue 25). Other server errors stay logged, not audited.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_outcome_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_outcome_check
    CHECK (outcome IN ('success', 'denied', 'not_found', 'invalid', 'error'));
