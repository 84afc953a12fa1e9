//! The shape of the crate, checked: no import circles between top-level modules, the
//! request stages in one direction, the rooms that must not import certain things, and
//! files small enough to read. Reads the sources as text (code lines only, tests cut).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules its code names (`crate::x`).
type Graph = BTreeMap<String, BTreeSet<String>>;

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// The module a file belongs to: `src/integrations/kinesis/sink.rs` -> `integrations`.
fn top_module(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The code lines of a file: comments and the unit tests left out.
fn code(text: &str) -> Vec<&str> {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .collect()
}

/// Names of the form `prefix` + identifier in a line.
fn names_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

fn graph() -> Graph {
    let mut g = Graph::new();
    for (path, text) in sources() {
        let from = top_module(&path);
        if from == "lib" || from == "main" {
            continue;
        }
        let deps = g.entry(from.clone()).or_default();
        for line in code(&text) {
            for to in names_after(line, "crate::") {
                if !to.is_empty() && to != from {
                    deps.insert(to.to_string());
                }
            }
        }
    }
    g
}

/// A circle of imports, if there is one.
fn circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|n| n == next).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(next.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(g, next, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in g.keys() {
        if !state.contains_key(node.as_str())
            && let Some(c) = visit(g, node, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_in_one_direction() {
    let g = graph();
    assert!(g.len() > 10, "the scan found the modules: {g:?}");
    if let Some(c) = circle(&g) {
        panic!("an import circle: {}", c.join(" -> "));
    }
}

#[test]
fn the_circle_check_finds_circles() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(circle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn no_stage_reaches_into_a_later_one() {
    // In request order. A stage may read what an earlier one produced (render reads the
    // identity authorize gave); naming a later stage would run it out of order. The shell
    // and the pipeline, which call the stages, are not stages.
    let order = [
        "route",
        "authorize",
        "validate",
        "render",
        "proxy",
        "dispatch",
        "respond",
    ];
    let g = graph();
    for (i, stage) in order.iter().enumerate() {
        for later in &order[i + 1..] {
            assert!(
                !g.get(*stage).is_some_and(|d| d.contains(*later)),
                "{stage} reaches forward into {later}"
            );
        }
    }
    // What the stages stand on does not depend on them. Config fills the stages' and the
    // services' own types (a route's path is a `route::PathTemplate`), so it may name the
    // route table, nothing later.
    let above = ["pipeline", "server", "cli"];
    for low in [
        "auth",
        "batch",
        "spool",
        "integrations",
        "mapping",
        "vtl",
        "config",
    ] {
        for stage in order.iter().chain(&above) {
            if low == "config" && *stage == "route" {
                continue;
            }
            assert!(
                !g.get(low).is_some_and(|d| d.contains(*stage)),
                "{low} depends on {stage}, which stands above it"
            );
        }
    }
}

#[test]
fn rooms_keep_to_themselves() {
    // (module, what its code must not name, why)
    let rules: &[(&str, &str, &str)] = &[
        ("vtl", "crate::", "the interpreter stands alone"),
        ("vtl", "tokio", "rendering is synchronous"),
        ("vtl", "axum", "rendering knows no HTTP"),
        ("mapping", "axum", "templates know no HTTP server"),
        ("mapping", "aws_sdk", "templates make no calls"),
        (
            "batch",
            "crate::integrations",
            "batching knows sinks only by the trait",
        ),
        (
            "spool",
            "crate::integrations",
            "the spool does not know who drains it",
        ),
        (
            "upstream",
            "crate::",
            "the shared vocabulary depends on nothing",
        ),
        (
            "error",
            "crate::integrations",
            "errors know the vocabulary, not the services",
        ),
        (
            "config",
            "tokio::spawn",
            "config loads and checks, it starts nothing",
        ),
    ];
    let mut broken = Vec::new();
    for (path, text) in sources() {
        let module = top_module(&path);
        for (room, banned, why) in rules {
            if module == *room && code(&text).iter().any(|l| l.contains(banned)) {
                broken.push(format!("{}: names {banned} ({why})", path.display()));
            }
        }
        // Only the integrations (and the OpenAPI mapping of API Gateway's service URIs) know
        // particular actions; the rest ask the route's integration.
        if !["integrations", "upstream", "openapi"].contains(&module.as_str()) {
            for line in code(&text) {
                let named = names_after(line, "Action::");
                if named
                    .iter()
                    .any(|n| n.starts_with(char::is_uppercase) && *n != "NAMES")
                {
                    broken.push(format!("{}: names an action: {line}", path.display()));
                }
            }
        }
        // Only the integrations call AWS.
        if module != "integrations" && code(&text).iter().any(|l| l.contains("aws_sdk_")) {
            broken.push(format!(
                "{}: names aws_sdk_* outside integrations",
                path.display()
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn stage_and_config_files_stay_readable() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        let module = top_module(&path);
        let watched = [
            "pipeline",
            "authorize",
            "validate",
            "render",
            "proxy",
            "dispatch",
            "respond",
            "config",
        ];
        let end = text.find("#[cfg(test)]").unwrap_or(text.len());
        let lines = text[..end].lines().count();
        if watched.contains(&module.as_str()) && lines > 600 {
            long.push(format!("{}: {lines} lines", path.display()));
        }
    }
    assert!(long.is_empty(), "over 600 lines: {}", long.join(", "));
}
