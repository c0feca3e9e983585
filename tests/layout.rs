//! The project's layout rules, checked on the source tree so that breaking one fails
//! CI: the master's modules import each other one way only (no cycle between files
//! of `crates/ferry/src`), and no file in `crates/` grows past [`MAX_LINES`].
//!
//! An arrow is any `crate::a::b` path in a file (a `use` or an inline path): it
//! points at the deepest file that the path names (`crate::dispatch::pool::Lease`
//! points at `dispatch/pool.rs`, `crate::dispatch::X` at `dispatch/mod.rs`), and
//! `super::` inside a `mod tests` block is a file's own. Comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a source file in `crates/` may have.
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source folder") {
        let path = entry.expect("a readable entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src`: `dispatch/pool.rs` is `dispatch::pool`,
/// `dispatch/mod.rs` is `dispatch`, `lib.rs` is the crate root (empty).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// Every module path that a file's `crate::` paths reach, resolved against the
/// modules that exist (the longest prefix that names one).
fn arrows(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            // A `use crate::{a, b::c}` group is read as each of its members.
            let paths: Vec<String> = if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                inner
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            } else {
                vec![after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect()]
            };
            for path in paths {
                let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                let target = (1..=segments.len())
                    .rev()
                    .map(|n| segments[..n].join("::"))
                    .find(|m| modules.contains(m));
                if let Some(target) = target {
                    found.insert(target);
                }
            }
            rest = after;
        }
    }
    found
}

/// A cycle in `graph`, as the list of modules around it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|m| m == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(src, file);
        // The crate root and the binary only declare and start things.
        if module.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let mut to = arrows(&text, &modules);
        to.remove(&module);
        to.remove("");
        graph.insert(module, to);
    }
    graph
}

#[test]
fn the_masters_modules_import_each_other_one_way_only() {
    let graph = module_graph(&root().join("crates/ferry/src"));
    assert!(
        graph.len() >= 10,
        "the module graph was not read: {graph:?}"
    );
    // The graph is real: the top imports the pieces below it.
    assert!(graph["master"].contains("slots"), "{graph:?}");
    assert!(
        graph["dispatch::channel"].contains("dispatch::table"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn no_source_file_in_crates_is_over_the_limit() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    assert!(files.len() > 20, "the sources were not found");
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by concern; each is over {MAX_LINES} lines: {long:?}"
    );
}

#[test]
fn the_cycle_check_finds_a_cycle_and_resolves_paths() {
    let modules: BTreeSet<String> = ["a", "b", "b::c", "d"].map(String::from).into();
    let text = "use crate::b::c::Thing;\n// crate::d is only a comment\nlet x = crate::a::f();\nuse crate::{d::X, b};";
    let found = arrows(text, &modules);
    assert_eq!(found, ["a", "b", "b::c", "d"].map(String::from).into());

    let edges = |pairs: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in pairs {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            g.entry(to.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    let cycle = find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
}
