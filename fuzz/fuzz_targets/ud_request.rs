//! `cargo fuzz run ud_request`: the checks are `logmemcached::fuzzing::ud_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logmemcached::fuzzing::ud_request(data));
