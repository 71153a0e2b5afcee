-- SMART on FHIR's authorization server (issue 26): registered apps and back-end systems, the
-- authorizations they ask for, what was granted, and the tokens that carry it.

-- A registered client (RFC 7591 metadata). client_id is the row's id; a confidential client's
-- secret (256 random bits, made by the server) is stored only as its SHA-256, as codes and
-- refresh tokens are: a slow hash protects guessable passwords, not random values.
CREATE TABLE smart_clients (
    client_id uuid PRIMARY KEY,
    client_name text NOT NULL CHECK (char_length(client_name) BETWEEN 1 AND 200),
    redirect_uris text[] NOT NULL DEFAULT '{}',
    grant_types text[] NOT NULL,
    token_endpoint_auth_method text NOT NULL
        CHECK (token_endpoint_auth_method IN ('none', 'client_secret_basic', 'private_key_jwt')),
    jwks jsonb,
    jwks_uri text,
    -- The most the client may ever be granted.
    scope text NOT NULL,
    launch_url text,
    secret_hash text,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((token_endpoint_auth_method = 'client_secret_basic') = (secret_hash IS NOT NULL)),
    CHECK (token_endpoint_auth_method <> 'private_key_jwt' OR jwks IS NOT NULL OR jwks_uri IS NOT NULL)
);

-- One authorization: what a user (or, without one, a back-end system) granted a client. Every
-- access token names its grant and every request reads it back, so revoking it, deleting the
-- client or the user, or a new session epoch (password change, logout everywhere) ends every
-- token issued under it at once. A refresh token's family is its grant.
CREATE TABLE smart_grants (
    id uuid PRIMARY KEY,
    client_id uuid NOT NULL REFERENCES smart_clients (client_id) ON DELETE CASCADE,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    -- The user's session epoch when granted.
    session_epoch integer,
    scope text NOT NULL,
    patient_id uuid REFERENCES patients (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The grant's own end: its access token's for client credentials, the refresh tokens' else.
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CHECK ((user_id IS NULL) = (session_epoch IS NULL))
);
CREATE INDEX smart_grants_client_idx ON smart_grants (client_id);
CREATE INDEX smart_grants_user_idx ON smart_grants (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX smart_grants_expires_idx ON smart_grants (expires_at);

-- Refresh tokens, by the SHA-256 of their value: each is used once and replaced; presenting a
-- used one again revokes its grant (the whole family).
CREATE TABLE smart_refresh_tokens (
    token_hash bytea PRIMARY KEY,
    grant_id uuid NOT NULL REFERENCES smart_grants (id) ON DELETE CASCADE,
    issued_at timestamptz NOT NULL DEFAULT now(),
    used_at timestamptz
);
CREATE INDEX smart_refresh_tokens_grant_idx ON smart_refresh_tokens (grant_id);

-- EHR launch: the console binds a patient and its user to an opaque value it hands the app.
CREATE TABLE smart_launches (
    value_hash bytea PRIMARY KEY,
    client_id uuid NOT NULL REFERENCES smart_clients (client_id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    patient_id uuid NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX smart_launches_client_idx ON smart_launches (client_id);

-- An authorization request from the authorize endpoint until its code is exchanged: checked,
-- then signed in to and consented in the console, then a code (by its SHA-256) that lives at
-- most 60 seconds and is exchanged once; a second exchange revokes what the first issued.
CREATE TABLE smart_authorizations (
    id uuid PRIMARY KEY,
    client_id uuid NOT NULL REFERENCES smart_clients (client_id) ON DELETE CASCADE,
    redirect_uri text NOT NULL,
    scope text NOT NULL,
    state text,
    nonce text,
    code_challenge text NOT NULL,
    -- From the EHR launch the request named.
    launch_user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    launch_patient_id uuid REFERENCES patients (id) ON DELETE CASCADE,
    -- The pending request's end (time to sign in and consent).
    expires_at timestamptz NOT NULL,
    -- Once approved: who, in which session (a logout before the exchange ends what it grants).
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    session_epoch integer,
    patient_id uuid REFERENCES patients (id) ON DELETE CASCADE,
    granted_scope text,
    code_hash bytea UNIQUE,
    code_expires_at timestamptz,
    exchanged_at timestamptz,
    grant_id uuid REFERENCES smart_grants (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX smart_authorizations_expires_idx ON smart_authorizations (expires_at);
CREATE INDEX smart_authorizations_client_idx ON smart_authorizations (client_id);

-- Backend Services: each client assertion's jti, kept until the assertion expires, so a
-- replay is refused.
CREATE TABLE smart_assertion_jtis (
    client_id uuid NOT NULL REFERENCES smart_clients (client_id) ON DELETE CASCADE,
    jti text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX smart_assertion_jtis_expires_idx ON smart_assertion_jtis (expires_at);

-- auth: registers clients, runs the authorize and token endpoints, revocation, introspection.
GRANT SELECT, INSERT, UPDATE, DELETE ON smart_clients, smart_grants, smart_refresh_tokens,
    smart_launches, smart_authorizations, smart_assertion_jtis TO carevault_auth;
-- The picked or launched patient must exist; the user signing in is read whole already.
GRANT SELECT (id) ON patients TO carevault_auth;
-- fhir: every request with a SMART token reads its grant back (a deleted client's grants are
-- gone with it).
GRANT SELECT ON smart_grants TO carevault_fhir;
-- A deployment whose functions share one login.
GRANT SELECT, INSERT, UPDATE, DELETE ON smart_clients, smart_grants, smart_refresh_tokens,
    smart_launches, smart_authorizations, smart_assertion_jtis TO carevault_app;

-- A deactivated user's grants end for good: reactivating the account brings back none of them
-- (the grant check also refuses an inactive user, but only while inactive). Approved codes not
-- yet exchanged go too. SECURITY DEFINER: the users function, which deactivates, holds no
-- rights on the SMART tables.
CREATE FUNCTION carevault_smart_end_grants_of_deactivated() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF OLD.is_active AND NOT NEW.is_active THEN
        UPDATE smart_grants SET revoked_at = now()
        WHERE user_id = NEW.id AND revoked_at IS NULL;
        DELETE FROM smart_authorizations WHERE user_id = NEW.id AND exchanged_at IS NULL;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER users_smart_end_grants_of_deactivated
    AFTER UPDATE OF is_active ON users
    FOR EACH ROW EXECUTE FUNCTION carevault_smart_end_grants_of_deactivated();
REVOKE ALL ON FUNCTION carevault_smart_end_grants_of_deactivated() FROM PUBLIC;
