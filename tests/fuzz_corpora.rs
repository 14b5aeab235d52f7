//! The fuzz corpora as ordinary tests: every file of `fuzz/corpus/<target>/`
//! (regressions the fuzzers found included) runs through the same checks as
//! the target (`logmemcached::fuzzing`). A target is registered once, in
//! `logmemcached::fuzzing::TARGETS`; this file needs no change for a new one.

use std::path::{Path, PathBuf};

use logmemcached::fuzzing::TARGETS;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Run one target's corpus, naming the file that fails.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let dir = corpus_root().join(name);
    let inputs = files(&dir);
    assert!(!inputs.is_empty(), "fuzz target {name} has no corpus in {}", dir.display());
    for f in &inputs {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let r = std::panic::catch_unwind(|| target(&data));
        assert!(r.is_ok(), "{} fails the {name} checks (replay: cargo fuzz run {name} {})", f.display(), f.display());
    }
    inputs.len()
}

#[test]
fn every_corpus_passes_its_target() {
    let mut total = 0;
    for &(name, target) in TARGETS {
        total += replay(name, target);
    }
    assert!(total > 0);
}

/// A corpus directory without a registered target would never run.
#[test]
fn every_corpus_has_a_target() {
    for d in std::fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let name = d.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(TARGETS.iter().any(|(t, _)| *t == name), "fuzz/corpus/{name} has no entry in fuzzing::TARGETS");
    }
}
