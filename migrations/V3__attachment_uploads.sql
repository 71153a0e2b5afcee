-- Whether an attachment's bytes reached the bucket, and what S3 stored.
ALTER TABLE attachments
    ADD COLUMN status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'uploaded')),
    ADD COLUMN declared_size       bigint CHECK (declared_size >= 0),
    ADD COLUMN size                bigint CHECK (size >= 0),
    ADD COLUMN etag                text,
    ADD COLUMN stored_content_type text,
    -- The bytes were stored with another Content-Type or size than the client declared.
    ADD COLUMN content_mismatch    boolean NOT NULL DEFAULT false,
    ADD COLUMN uploaded_at         timestamptz;

-- Lists, newest first, all and per patient; the sweep of abandoned uploads.
CREATE INDEX attachments_created_at_id_idx ON attachments (created_at DESC, id DESC);
DROP INDEX attachments_patient_id_idx;
CREATE INDEX attachments_patient_id_created_at_idx ON attachments (patient_id, created_at DESC, id DESC);
CREATE INDEX attachments_pending_created_at_idx ON attachments (created_at) WHERE status = 'pending';
