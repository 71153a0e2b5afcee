-- name_text at 1M patients (docs/benchmarks.md): a GIN prefix query ('igor':*) cannot use the
-- index's fast intersection and took 10 ms where an exact lexeme took 1 ms. So the index holds
-- every prefix of every word of the name (up to 32 characters) and the query asks for exact ones.
CREATE FUNCTION carevault_name_prefixes(name text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN (
        SELECT array_to_tsvector(array_agg(DISTINCT left(lexeme, n)))
        FROM unnest(tsvector_to_array(to_tsvector('simple', carevault_fold(name)))) AS lexeme,
             generate_series(1, least(length(lexeme), 32)) AS n
    );

-- The words of a search box, each cut to the indexed length: 'jo smi' -> 'jo' & 'smi'.
CREATE OR REPLACE FUNCTION carevault_prefix_query(input text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN (
        SELECT to_tsquery('simple', string_agg(
            '''' || replace(replace(left(lexeme, 32), '\', '\\'), '''', '''''') || '''', ' & '))
        FROM unnest(tsvector_to_array(to_tsvector('simple', carevault_fold(input)))) AS lexeme
    );

-- A generated column's expression cannot be altered: replace the column and its index.
ALTER TABLE patients DROP COLUMN name_search;
ALTER TABLE patients ADD COLUMN name_search tsvector
    GENERATED ALWAYS AS (carevault_name_prefixes(name)) STORED;
CREATE INDEX patients_name_search_idx ON patients USING gin (name_search) WITH (fastupdate = off);
ALTER TABLE patients ALTER COLUMN name_search SET STATISTICS 1000;
GRANT EXECUTE ON FUNCTION carevault_name_prefixes(text) TO carevault_app;
