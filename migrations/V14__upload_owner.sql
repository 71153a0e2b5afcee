-- Who opened an upload: part URLs of a multipart upload are signed only for that user (or a
-- superuser), so another clinician cannot re-sign a part for other bytes. Attachments created
-- before this have none and keep the earlier rule (any clinician).
ALTER TABLE attachments ADD COLUMN created_by uuid;
