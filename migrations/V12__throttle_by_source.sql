-- Lockout must not be a weapon: the hourly cap on an account's failures applies only to the
-- addresses that failed against it, and each address has an hourly cap across all accounts
-- (password spraying). Failures now record where they came from; older rows have none.
ALTER TABLE login_failures ADD COLUMN source_ip text;
CREATE INDEX login_failures_source_idx ON login_failures (source_ip, failed_at);
