//! A FHIR instant search value (`_lastUpdated=lt2024-03-01T10:20Z`): `query::instant_value` in functions/fhir.
//! The property it checks is `fhir::fuzzing::check_instant`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fhir::fuzzing::check_instant(&String::from_utf8_lossy(data));
});
