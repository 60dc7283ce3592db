//! The module graph of a flat crate (one file per module, as `lb-ebpf`):
//! which module refers to which through `crate::` paths, and a check that
//! it has no cycle (issue 11: the data path's modules form layers, leaves
//! such as `clock`, `maps` and `words` at the bottom and `xdp` on top).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Module → the modules of the same crate it refers to (`crate::m::...`,
/// `use crate::{m, n::x}`), for every `*.rs` file directly in `src`
/// except the crate root (`main.rs`, `lib.rs`). Comments are ignored.
pub fn module_graph(src: &Path) -> std::io::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(src)? {
        let path = e?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        if path.extension().is_some_and(|x| x == "rs") && stem != "main" && stem != "lib" {
            files.insert(stem.to_owned(), std::fs::read_to_string(&path)?);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    Ok(files
        .into_iter()
        .map(|(m, text)| {
            let deps = crate_refs(&text).into_iter().filter(|d| *d != m && modules.contains(d)).collect();
            (m, deps)
        })
        .collect())
}

/// The first path segments after every `crate::` in `text` (outside `//`
/// comments): `crate::a::x` gives `a`, `crate::{a, b::{c, d}}` gives `a`, `b`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.insert(ident(rest));
            continue;
        };
        // The group up to its closing brace; its top-level items' first segments.
        let mut depth = 1;
        let mut start = 0;
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 1 => {
                    out.insert(ident(&group[start..]));
                    start = j + 1;
                    if c == '}' {
                        depth = 0;
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                rest = &group[j..];
                break;
            }
        }
    }
    out.remove("");
    out
}

/// The identifier at the start of `s` (after white space).
fn ident(s: &str) -> String {
    s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// A cycle of `graph` (its modules in order, the first repeated at the
/// end), or `None` when the graph is acyclic.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(m) {
            Some(Mark::Done) => return None,
            Some(Mark::Active) => {
                let from = path.iter().position(|p| *p == m).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(std::string::ToString::to_string).collect();
                cycle.push(m.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(m, Mark::Active);
        path.push(m);
        for d in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(m, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|m| visit(m, graph, &mut marks, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges.iter().map(|(m, ds)| (m.to_string(), ds.iter().map(std::string::ToString::to_string).collect())).collect()
    }

    #[test]
    fn crate_refs_reads_paths_groups_and_skips_comments() {
        let text = "use crate::{\n    forward::{send, FibParams},\n    maps::{A, B}, words,\n};\n\
                    // crate::commented::x\nlet t = crate::clock::now(); use crate::nat::Rewrite;";
        let got: Vec<String> = crate_refs(text).into_iter().collect();
        assert_eq!(got, ["clock", "forward", "maps", "nat", "words"]);
    }

    #[test]
    fn find_cycle_finds_one_and_accepts_layers() {
        let layered = graph(&[("xdp", &["log", "maps"]), ("log", &["clock"]), ("clock", &[]), ("maps", &[])]);
        assert_eq!(find_cycle(&layered), None);
        let cyclic = graph(&[("xdp", &["log"]), ("log", &["clock", "xdp"]), ("clock", &[])]);
        assert_eq!(find_cycle(&cyclic), Some(vec!["log".into(), "xdp".into(), "log".into()]));
    }

    /// The data path (`lb-ebpf`) has no import cycle between its modules.
    #[test]
    fn lb_ebpf_module_graph_is_acyclic() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-ebpf/src");
        let g = module_graph(&src).expect("reading lb-ebpf/src");
        // The parse sees the crate: its modules and their edges.
        assert!(g.len() >= 10, "lb-ebpf modules found: {:?}", g.keys());
        assert!(
            g.get("xdp").is_some_and(|d| d.contains("maps") && d.contains("scratch")),
            "xdp's edges: {:?}",
            g.get("xdp")
        );
        if let Some(cycle) = find_cycle(&g) {
            panic!(
                "lb-ebpf has an import cycle: {} (move the shared item into a lower module; graph: {g:?})",
                cycle.join(" -> ")
            );
        }
    }
}
