-- Business identifiers of a patient (a clinic's MRN, a national id): system (a URI) and value
-- pairs, each pair naming at most one patient. FHIR's Patient.identifier and the JSON API's
-- `identifiers` read and write them; they go with their patient.
CREATE TABLE patient_identifiers (
    system      varchar(255) NOT NULL,
    value       varchar(255) NOT NULL,
    patient_id  uuid NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    PRIMARY KEY (system, value)
);
-- A patient's identifiers (read with every record), and `identifier=value` in any system.
CREATE INDEX patient_identifiers_patient_idx ON patient_identifiers (patient_id);
CREATE INDEX patient_identifiers_value_idx ON patient_identifiers (value);
GRANT SELECT, INSERT, UPDATE, DELETE ON patient_identifiers TO carevault_app;

-- FHIR's `_lastUpdated` (search and `_sort`): the same keyset paging as the other sort orders.
CREATE INDEX patients_updated_at_id_idx ON patients (updated_at, id);
