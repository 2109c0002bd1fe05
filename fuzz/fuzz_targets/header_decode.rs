//! Arbitrary bytes as a header slot and as checksum-table entries: never panics; whatever
//! decodes re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    durable_backlog::fuzzing::header_decode(data);
});
