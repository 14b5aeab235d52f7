//! `cargo fuzz run binary`: the checks are `logmemcached::fuzzing::binary`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logmemcached::fuzzing::binary(data));
