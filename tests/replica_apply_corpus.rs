//! Replays the `replica_apply` fuzz target's corpus (fuzz/corpus/replica_apply/,
//! seeds and what the fuzzer kept) as an ordinary test: every input must
//! leave the replica consistent, as it did when the fuzzer ran.

#[test]
fn every_replica_apply_corpus_input_leaves_the_replica_consistent() {
    logmemcached::logging::init();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/replica_apply");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 8, "the corpus at {} has only {} inputs", dir.display(), inputs.len());
    for path in &inputs {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let r = std::panic::catch_unwind(|| logmemcached::replication::fuzzing::replica_apply(&data));
        assert!(r.is_ok(), "corpus input {} fails", path.display());
    }
}
