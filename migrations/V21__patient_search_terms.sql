-- Broad one-word text searches at index speed (issue 30). name_text and history_text find their
-- matches in GIN indexes, which hold row addresses and nothing else: the sort key of every
-- match, which the page needs, and so the count, came from reading each match's row in the
-- table, one random page per match. On a million patients that was 100 to 250 ms for 33,000 to
-- 163,000 matches, where the index scan that found them took 3 to 20 ms.
--
-- This table holds one row per patient and searchable word, with the patient's name (the
-- default sort's key), and its primary key is its only index, read index-only: a one-word
-- history search reads its page straight off the index in name order and counts with one range
-- scan; a one-word name search reads every word starting with the prefix from one range of the
-- index and sorts only a page's worth of it. Searches of several words, phrases, operators and
-- the other sorts keep the GIN indexes, where intersecting words is what that index is for.
--
-- Kept in step by triggers, in the same transaction as the change. Writes to patients wait
-- until the table, its backfill and its triggers are committed together (a change committed in
-- between would be missed for good: the migrate function runs while the old functions serve).
LOCK TABLE patients IN SHARE ROW EXCLUSIVE MODE;

-- The words of a name as name_text matches them: folded, the apostrophe-free spellings too,
-- each cut to the 32 characters carevault_prefix_query cuts a searched word to. Each with how
-- much it shares with the word before it in byte order: a patient's words that start with a
-- prefix are consecutive in that order, so the first of them is the only one that shares less
-- than the prefix with its predecessor, and a prefix search keeps just that one (John Johnson
-- is one match for "jo", without sorting the matches to remove the second).
-- PL/pgSQL, as the next function: its plans are kept for the session, where a SQL function that
-- is not inlined is planned again at every call (measured: the triggers cost three times as much).
-- Its words must stay among the prefixes carevault_name_prefixes stores (the triggers find a
-- row's entries there): a migration that changes either rebuilds this table.
CREATE FUNCTION carevault_name_terms(name text) RETURNS TABLE (term text, shared smallint)
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
DECLARE
    previous text := '';
    n integer;
BEGIN
    FOR term IN
        SELECT DISTINCT left(lexeme, 32) COLLATE "C"
        FROM unnest(tsvector_to_array(
                 to_tsvector('simple', carevault_fold(name))
                 || to_tsvector('simple', carevault_fold(regexp_replace(name, '[''’`]', '', 'g')))
             )) AS lexeme
        ORDER BY 1
    LOOP
        n := 0;
        WHILE n < length(term) AND n < length(previous)
            AND substr(term, n + 1, 1) = substr(previous, n + 1, 1) LOOP
            n := n + 1;
        END LOOP;
        shared := n;
        RETURN NEXT;
        previous := term;
    END LOOP;
END $$;

-- The lexemes of a history (its history_search column) a one-word search can ask for: at most
-- 64 characters, the longest word the search sends here (longer words go to the GIN index),
-- which also keeps every index entry far below a B-tree's limit.
CREATE FUNCTION carevault_history_terms(history tsvector) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
BEGIN
    RETURN ARRAY(
        SELECT lexeme FROM unnest(tsvector_to_array(history)) AS lexeme WHERE length(lexeme) <= 64
    );
END $$;

CREATE TABLE patient_search_terms (
    -- 'n': a word of the name; 'h': a lexeme of the medical history.
    kind "char" NOT NULL CHECK (kind IN ('n', 'h')),
    -- Byte order, so that the words starting with a prefix are one range of the index.
    term text COLLATE "C" NOT NULL,
    -- As in patients (same type, same collation): the index's order is the name sort's.
    name character varying(255) NOT NULL,
    patient_id uuid NOT NULL,
    -- A name word's characters in common with the patient's word before it (see
    -- carevault_name_terms); 0 for a history lexeme, which is matched whole.
    shared smallint NOT NULL
);

-- The backfill before the index: one sorted build instead of millions of insertions.
INSERT INTO patient_search_terms (kind, term, shared, name, patient_id)
SELECT 'n', w.term, w.shared, p.name, p.id FROM patients p, carevault_name_terms(p.name::text) AS w
UNION ALL
SELECT 'h', term, 0, p.name, p.id
FROM patients p, unnest(carevault_history_terms(p.history_search)) AS term;

ALTER TABLE patient_search_terms ADD PRIMARY KEY (kind, term, name, patient_id) INCLUDE (shared);

-- Inserts and deletes per statement (a COPY of a million patients is one join, not a million
-- calls); updates per row, and only when the name or the history changed.
CREATE FUNCTION carevault_add_search_terms() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO patient_search_terms (kind, term, shared, name, patient_id)
    SELECT 'n', w.term, w.shared, p.name, p.id
    FROM inserted_rows p, carevault_name_terms(p.name::text) AS w
    UNION ALL
    SELECT 'h', term, 0, p.name, p.id
    FROM inserted_rows p, unnest(carevault_history_terms(p.history_search)) AS term;
    RETURN NULL;
END $$;
CREATE TRIGGER patients_terms_on_insert AFTER INSERT ON patients
    REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT
    EXECUTE FUNCTION carevault_add_search_terms();

-- Each deleted row's entries found by their whole key, from what the row stores: its history's
-- lexemes, and for the name every prefix of its words (name_search, written with the row), of
-- which the name's entries are some. Computing the words again instead would miss entries once
-- the folding changed (new unaccent rules in a PostgreSQL upgrade): stale rows, and a rename
-- back to that name failing on their keys.
CREATE FUNCTION carevault_remove_search_terms() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM patient_search_terms t
    USING (
        SELECT 'n'::"char" AS kind, term, p.name, p.id
        FROM deleted_rows p, unnest(tsvector_to_array(p.name_search)) AS term
        UNION ALL
        SELECT 'h'::"char", term, p.name, p.id
        FROM deleted_rows p, unnest(carevault_history_terms(p.history_search)) AS term
    ) AS gone (kind, term, name, id)
    WHERE t.kind = gone.kind AND t.term = gone.term AND t.name = gone.name
        AND t.patient_id = gone.id;
    RETURN NULL;
END $$;
CREATE TRIGGER patients_terms_on_delete AFTER DELETE ON patients
    REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT
    EXECUTE FUNCTION carevault_remove_search_terms();

-- A new history removes the lexemes it lost and adds those it gained; a new name replaces the
-- name's words and moves the history's entries to the new name (the name is in every key).
CREATE FUNCTION carevault_change_search_terms() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    old_history text[] := carevault_history_terms(OLD.history_search);
    new_history text[] := old_history;
BEGIN
    IF OLD.medical_history IS DISTINCT FROM NEW.medical_history THEN
        new_history := carevault_history_terms(NEW.history_search);
        DELETE FROM patient_search_terms
        WHERE kind = 'h'
            AND term = ANY(ARRAY(SELECT unnest(old_history) EXCEPT SELECT unnest(new_history)))
            AND name = OLD.name AND patient_id = OLD.id;
    END IF;
    IF OLD.name IS DISTINCT FROM NEW.name THEN
        -- As on delete: the old words among the prefixes the row stored.
        DELETE FROM patient_search_terms
        WHERE kind = 'n' AND term = ANY(tsvector_to_array(OLD.name_search))
            AND name = OLD.name AND patient_id = OLD.id;
        UPDATE patient_search_terms SET name = NEW.name
        WHERE kind = 'h' AND term = ANY(new_history) AND name = OLD.name AND patient_id = OLD.id;
        INSERT INTO patient_search_terms (kind, term, shared, name, patient_id)
        SELECT 'n', w.term, w.shared, NEW.name, NEW.id FROM carevault_name_terms(NEW.name::text) AS w;
    END IF;
    IF OLD.medical_history IS DISTINCT FROM NEW.medical_history THEN
        INSERT INTO patient_search_terms (kind, term, shared, name, patient_id)
        SELECT 'h', term, 0, NEW.name, NEW.id
        FROM (SELECT unnest(new_history) EXCEPT SELECT unnest(old_history)) AS gained (term);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER patients_terms_on_update AFTER UPDATE OF name, medical_history ON patients
    FOR EACH ROW
    WHEN (OLD.name IS DISTINCT FROM NEW.name
        OR OLD.medical_history IS DISTINCT FROM NEW.medical_history)
    EXECUTE FUNCTION carevault_change_search_terms();

-- TRUNCATE removes no rows one by one: the table follows it whole.
CREATE FUNCTION carevault_truncate_search_terms() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    TRUNCATE patient_search_terms;
    RETURN NULL;
END $$;
CREATE TRIGGER patients_terms_on_truncate AFTER TRUNCATE ON patients
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_truncate_search_terms();

REVOKE ALL ON FUNCTION carevault_add_search_terms() FROM PUBLIC;
REVOKE ALL ON FUNCTION carevault_remove_search_terms() FROM PUBLIC;
REVOKE ALL ON FUNCTION carevault_change_search_terms() FROM PUBLIC;
REVOKE ALL ON FUNCTION carevault_truncate_search_terms() FROM PUBLIC;

-- Read by the patient search (the JSON API's and FHIR's).
GRANT SELECT ON patient_search_terms TO carevault_patients, carevault_fhir, carevault_app;
