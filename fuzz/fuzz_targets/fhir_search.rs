//! A query string as the Patient and AuditEvent searches read it (tokens, references, ids, dates, codes), each value as a DocumentReference's patient reference.
//! The property it checks is `fhir::fuzzing::check_search`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fhir::fuzzing::check_search(&String::from_utf8_lossy(data));
});
