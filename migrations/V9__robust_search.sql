-- The unfiltered patient list's total, kept exact by the write path: a statement-level trigger
-- adds and subtracts the rows each statement inserts or deletes, in the same transaction, so
-- the list never counts a million rows to say how many there are.
CREATE TABLE patient_totals (
    id       integer PRIMARY KEY CHECK (id = 1),
    patients bigint NOT NULL
);
INSERT INTO patient_totals (id, patients) SELECT 1, count(*) FROM patients;

CREATE FUNCTION carevault_count_patients() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE patient_totals SET patients = patients + (SELECT count(*) FROM inserted_rows);
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE patient_totals SET patients = patients - (SELECT count(*) FROM deleted_rows);
    ELSE
        UPDATE patient_totals SET patients = 0;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER patients_counted_on_insert AFTER INSERT ON patients
    REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT EXECUTE FUNCTION carevault_count_patients();
CREATE TRIGGER patients_counted_on_delete AFTER DELETE ON patients
    REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT EXECUTE FUNCTION carevault_count_patients();
CREATE TRIGGER patients_counted_on_truncate AFTER TRUNCATE ON patients
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_count_patients();
GRANT SELECT, UPDATE ON patient_totals TO carevault_app;

-- Names typed as they are written. A hyphenated word ('smith-jones') was queried as a phrase
-- (to_tsquery re-parses each word, and the prefix index holds no positions), so it found
-- nothing: the query now takes the words as lexemes. And a word with an apostrophe is indexed
-- as written ('o', 'brien') and joined ('obrien'), so "obrien" finds O'Brien.
CREATE OR REPLACE FUNCTION carevault_prefix_query(input text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN (
        SELECT string_agg(
            '''' || replace(replace(left(lexeme, 32), '\', '\\'), '''', '''''') || '''', ' & ')::tsquery
        FROM unnest(tsvector_to_array(to_tsvector('simple', carevault_fold(input)))) AS lexeme
    );

CREATE OR REPLACE FUNCTION carevault_name_prefixes(name text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN (
        SELECT array_to_tsvector(array_agg(DISTINCT left(lexeme, n)))
        FROM unnest(tsvector_to_array(
                 to_tsvector('simple', carevault_fold(name))
                 || to_tsvector('simple', carevault_fold(regexp_replace(name, '[''’`]', '', 'g')))
             )) AS lexeme,
             generate_series(1, least(length(lexeme), 32)) AS n
    );

-- A generated column's expression cannot be refreshed in place: replace the column and its index.
ALTER TABLE patients DROP COLUMN name_search;
ALTER TABLE patients ADD COLUMN name_search tsvector
    GENERATED ALWAYS AS (carevault_name_prefixes(name)) STORED;
CREATE INDEX patients_name_search_idx ON patients USING gin (name_search) WITH (fastupdate = off);
ALTER TABLE patients ALTER COLUMN name_search SET STATISTICS 1000;
