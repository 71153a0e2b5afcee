-- A second factor for every account (issue 28): authenticator codes (TOTP), recovery codes and
-- passkeys (WebAuthn), and the short-lived sign-in step between password and factor.

-- The TOTP secret, sealed with AES-256-GCM under a key from Secrets Manager (never in clear
-- here); `key_id` names that key, so it can be rotated. Pending until `confirmed_at`. The last
-- time step a code was accepted for: a code is good once, and never one of an earlier step.
CREATE TABLE user_totp (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    key_id text NOT NULL,
    sealed_secret bytea NOT NULL,
    confirmed_at timestamptz,
    last_used_step bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Ten codes of 80 random bits each, shown once: stored as their SHA-256 (a slow hash protects
-- guessable passwords, not random values), each good once.
CREATE TABLE user_recovery_codes (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_digest bytea NOT NULL,
    used_at timestamptz,
    PRIMARY KEY (user_id, code_digest)
);

-- A registered passkey: webauthn-rs's credential (public key, algorithm, flags) as JSON, and
-- the authenticator's signature counter, which must only go up (a counter that goes backwards
-- is a cloned authenticator).
CREATE TABLE user_passkeys (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    credential_id bytea NOT NULL UNIQUE,
    credential jsonb NOT NULL,
    sign_count bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX user_passkeys_user_idx ON user_passkeys (user_id, created_at);

-- A registration ceremony in progress: the challenge state between the options and the answer.
CREATE TABLE passkey_registrations (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    state jsonb NOT NULL,
    expires_at timestamptz NOT NULL
);

-- A sign-in between the right password and the second factor: the `mfa_token` (256 random
-- bits, stored as its SHA-256), bound to its user and to the session epoch of its time, good
-- once, for 5 minutes and 5 wrong codes; with a passkey challenge once asked for.
CREATE TABLE mfa_logins (
    token_digest bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_epoch integer NOT NULL,
    expires_at timestamptz NOT NULL,
    failures integer NOT NULL DEFAULT 0,
    passkey_state jsonb
);
CREATE INDEX mfa_logins_expiry_idx ON mfa_logins (expires_at);

-- auth: signs in with a factor (reads it, records its use, the replay and counter guards).
GRANT SELECT, UPDATE (last_used_step) ON user_totp TO carevault_auth;
GRANT SELECT, UPDATE (used_at) ON user_recovery_codes TO carevault_auth;
GRANT SELECT, UPDATE (credential, sign_count, last_used_at) ON user_passkeys TO carevault_auth;
GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_logins TO carevault_auth;
-- users: enrolment and removal, a user's own and a superuser's reset (which ends sessions).
GRANT SELECT, INSERT, UPDATE, DELETE ON user_totp, user_recovery_codes, user_passkeys,
    passkey_registrations, mfa_logins TO carevault_users;
-- A deployment whose functions still share one login.
GRANT SELECT, INSERT, UPDATE, DELETE ON user_totp, user_recovery_codes, user_passkeys,
    passkey_registrations, mfa_logins TO carevault_app;
