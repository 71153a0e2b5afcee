-- Sessions end with a password change or a logout: access tokens carry the epoch they were
-- issued under, and the user row (loaded for every request anyway) holds the current one.
ALTER TABLE users ADD COLUMN session_epoch integer NOT NULL DEFAULT 0;

-- Failed logins per account and source address: consecutive failures, and until when further
-- attempts of that pair are refused. A success removes the row.
CREATE TABLE login_throttle (
    account       text NOT NULL,
    source_ip     text NOT NULL,
    failures      integer NOT NULL,
    blocked_until timestamptz,
    last_failure  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, source_ip)
);

-- Every failed attempt on an account, from anywhere, for the hourly cap across addresses. Rows
-- older than an hour are deleted as new ones come.
CREATE TABLE login_failures (
    account   text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_account_idx ON login_failures (account, failed_at);

-- When a recovery email last went to an address: at most one per window.
CREATE TABLE recovery_emails (
    account text PRIMARY KEY,
    sent_at timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON login_throttle, login_failures, recovery_emails TO carevault_app;
