//! `cargo fuzz run text`: the checks are `logmemcached::fuzzing::text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logmemcached::fuzzing::text(data));
