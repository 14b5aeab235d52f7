//! The replica's record validation and apply, fed arbitrary bytes as its
//! primary's memory: `logmemcached::replication::fuzzing::replica_apply`
//! builds a primary's control blocks and log from the input (sealed records
//! of any shape, raw bytes, absurd fields), runs the real replica loop on it,
//! and panics if the replica is left with a log it cannot walk or an index
//! that disagrees with it. A panic anywhere in the replica is a finding too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    logmemcached::replication::fuzzing::replica_apply(data);
});
