-- Where the scheduled sweep's walk of the bucket stopped (the last key it looked at), so each
-- run goes on from there and a bucket of any size is covered in bounded runs. One row.
CREATE TABLE bucket_sweep (
    id integer PRIMARY KEY CHECK (id = 1),
    start_after text,
    swept_at timestamptz
);
INSERT INTO bucket_sweep (id) VALUES (1);

GRANT SELECT, UPDATE ON bucket_sweep TO carevault_app;
