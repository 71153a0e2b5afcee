//! A query string as the FHIR searches split it: `query::params` in functions/fhir.
//! The property it checks is `fhir::fuzzing::check_query`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fhir::fuzzing::check_query(&String::from_utf8_lossy(data));
});
