-- Multipart uploads (files above S3's 5 GiB single-PUT limit, resumable) and SHA-256 checksums.
ALTER TABLE attachments
    -- The S3 multipart upload this attachment's bytes arrive through; null for a single PUT.
    ADD COLUMN upload_id          text,
    ADD COLUMN part_size          bigint CHECK (part_size > 0),
    ADD COLUMN part_count         integer CHECK (part_count BETWEEN 1 AND 10000),
    -- Base64 SHA-256 of the whole file, as the client declared it at creation.
    ADD COLUMN declared_sha256    text,
    -- As S3 reports it once uploaded: the whole object's for a single PUT, the composite
    -- `<base64>-<parts>` for a multipart upload.
    ADD COLUMN checksum_sha256    text,
    -- Last time part URLs were issued: a long upload is abandoned only after this goes stale.
    ADD COLUMN upload_activity_at timestamptz,
    ADD CONSTRAINT attachments_multipart_plan CHECK (
        (upload_id IS NULL) = (part_size IS NULL) AND (upload_id IS NULL) = (part_count IS NULL)
    );

-- The SHA-256 each part URL was signed for: S3 refuses other bytes, and the object's composite
-- checksum is computed from these where the bucket does not report part checksums.
CREATE TABLE upload_parts (
    attachment_id uuid NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    part_number   integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    sha256        text NOT NULL,
    signed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (attachment_id, part_number)
);

-- Multipart uploads whose row is gone while the upload was still open: aborted right after the
-- delete commits, retried by the scheduled sweep until S3 confirms, so no part outlives its row.
CREATE TABLE multipart_aborts (
    upload_id  text PRIMARY KEY,
    object_key text NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX multipart_aborts_object_key_idx ON multipart_aborts (object_key);

-- Every path that deletes a pending multipart attachment (its own delete, its patient's delete,
-- the sweep of abandoned uploads) queues the abort in the same transaction.
CREATE FUNCTION carevault_queue_multipart_abort() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO multipart_aborts (upload_id, object_key)
    VALUES (OLD.upload_id, OLD.object_key)
    ON CONFLICT (upload_id) DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER attachments_queue_multipart_abort
    AFTER DELETE ON attachments
    FOR EACH ROW WHEN (OLD.upload_id IS NOT NULL AND OLD.status = 'pending')
    EXECUTE FUNCTION carevault_queue_multipart_abort();

GRANT SELECT, INSERT, UPDATE, DELETE ON upload_parts, multipart_aborts TO carevault_app;
