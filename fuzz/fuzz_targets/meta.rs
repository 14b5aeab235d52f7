//! `cargo fuzz run meta`: the checks are `logmemcached::fuzzing::meta`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logmemcached::fuzzing::meta(data));
