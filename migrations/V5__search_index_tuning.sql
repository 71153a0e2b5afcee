-- Measured at 1M patients (docs/benchmarks.md): GIN's pending list (fastupdate) made every search
-- scan recently inserted entries linearly, and default statistics misjudged rare words.
-- Searches matter more than insert speed here: entries go straight into the index.
ALTER INDEX patients_name_search_idx SET (fastupdate = off);
ALTER INDEX patients_history_search_idx SET (fastupdate = off);
SELECT gin_clean_pending_list('patients_name_search_idx'::regclass);
SELECT gin_clean_pending_list('patients_history_search_idx'::regclass);
ALTER TABLE patients
    ALTER COLUMN name_search SET STATISTICS 1000,
    ALTER COLUMN history_search SET STATISTICS 1000;
