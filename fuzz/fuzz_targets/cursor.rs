//! A `_cursor` for every list: `domain::paging::Cursor::decode` and `Keyset::of`, of the input
//! as it is and of its base64url (so that the input can be the JSON a cursor carries;
//! fuzz/seeds/cursor holds one of each shape).
//! The property it checks is `fhir::fuzzing::check_cursor`'s.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fhir::fuzzing::check_cursor(&String::from_utf8_lossy(data));
    fhir::fuzzing::check_cursor(&URL_SAFE_NO_PAD.encode(data));
});
