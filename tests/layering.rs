//! The tree's shape, checked: every `crate::` path in `src/` points down the
//! layer order (ARCHITECTURE in README.md), and no source file is over 800
//! lines. A back-arrow or a sprawling file fails here, not in review.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layers, top to bottom. A module may name modules of lower layers, and of
/// its own layer except the pairs in `SIBLINGS`. Above them all: the binary,
/// `src/main.rs` and its command line `src/cli/`, which name the library as
/// `logmemcached::` and are not checked.
const LAYERS: &[&[&str]] = &[
    // bench: the load generator and (bench/fuzzing) the fuzz targets'
    // checks, which drive protocol, server and client.
    &["bench"],
    &["client", "server"],
    &["protocol", "rdma_wire"],
    &["runtime", "stats", "latency"],
    &["replication"],
    &["store"],
    &["log", "index"],
    &["memory", "rdma", "auth"],
];

/// Same layer, and still not allowed to name each other.
const SIBLINGS: &[(&str, &str)] = &[("client", "server")];

/// Utilities every layer may use; they name nothing above themselves.
const LEAVES: &[&str] = &["error", "logging", "clock"];

const MAX_LINES: usize = 800;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/store/write.rs` -> `store`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The modules a file names through `crate::X` (macros map to their module:
/// `crate::bail` is error's, `crate::log_warn` logging's).
fn named_modules(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c == '$' || c.is_alphanumeric() || c == '_') {
                continue; // `$crate::` in a macro, or part of a longer path
            }
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // Exported macros live at the crate root, called or imported.
            let module = match name.as_str() {
                "bail" => "error".to_string(),
                m if m.starts_with("log_") => "logging".to_string(),
                m => m.to_string(),
            };
            found.push((n + 1, module));
        }
    }
    found
}

#[test]
fn every_crate_path_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut back_arrows = Vec::new();
    let mut unknown = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        if from == "main" || from == "cli" || from == "lib" {
            continue; // the binary (its wiring and command line) and the module list name everything
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (line, to) in named_modules(&text) {
            if to == from || LEAVES.contains(&to.as_str()) {
                continue;
            }
            let (Some(lf), Some(lt)) =
                (layer_of(&from).or(LEAVES.contains(&from.as_str()).then_some(usize::MAX)), layer_of(&to))
            else {
                unknown
                    .insert(format!("{}:{line}", f.strip_prefix(&src).unwrap().display()), format!("{from} -> {to}"));
                continue;
            };
            let sibling = SIBLINGS
                .iter()
                .any(|&(a, b)| (a, b) == (from.as_str(), to.as_str()) || (b, a) == (from.as_str(), to.as_str()));
            if lt < lf || (lt == lf && sibling) {
                back_arrows
                    .push(format!("src/{}:{line}: {from} names crate::{to}", f.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(unknown.is_empty(), "modules missing from the layer table in tests/layering.rs: {unknown:#?}");
    assert!(back_arrows.is_empty(), "paths that point up the layer order:\n{}", back_arrows.join("\n"));
}

#[test]
fn no_source_file_is_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "perf"] {
        rust_files(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(root).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split these along their seams: {long:?}");
}

#[test]
fn the_checker_sees_arrows() {
    // The scanner itself: a path, a macro, and what it must not count.
    let found = named_modules(
        "use crate::store::Store;\n  crate::bail!(\"x\");\n $crate::logging::log(..)\n crate::log_warn!(\"y\")",
    );
    let names: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(names, ["store", "error", "logging"]);
    assert!(layer_of("protocol") < layer_of("runtime") && layer_of("store") < layer_of("log"));
}
