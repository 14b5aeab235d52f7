//! `cargo fuzz run client_reply`: the checks are `logmemcached::fuzzing::client_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logmemcached::fuzzing::client_reply(data));
