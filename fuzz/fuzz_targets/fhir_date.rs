//! A FHIR date search value (`birthdate=ge1980-02`): `query::date_value` in functions/fhir.
//! The property it checks is `fhir::fuzzing::check_date`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fhir::fuzzing::check_date(&String::from_utf8_lossy(data));
});
