//! JSONPath for `$input.path(..)` and `$input.json(..)`, with the result rules of Jayway
//! JsonPath (the library API Gateway's documentation points to).
//!
//! - A path without a leading `$` gets `$.` prepended (`$input.json('name')`).
//! - Dot names may hold characters RFC 9535 shorthand forbids (`$.partition-key`).
//! - A *definite* path (names and single indexes only) yields the node itself, or nothing.
//!   These are resolved here directly, which is also the fast path for the common case.
//! - An *indefinite* path (wildcard, deep scan `..`, filter, slice, union) always yields a
//!   list, even for one match; these are rewritten into RFC 9535 syntax and evaluated by the
//!   `serde_json_path` crate, which implements the full standard.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value as Json;
use serde_json_path::JsonPath;

/// A step of a definite path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    /// An array index; negative counts from the end.
    Index(i64),
}

#[derive(Debug)]
pub enum Path {
    Definite(Vec<Step>),
    Indefinite(JsonPath),
}

/// The result of evaluating a path against a document.
pub enum Found<'a> {
    /// A definite path matched: the node and its concrete location.
    Node(&'a Json, Vec<Resolved>),
    /// An indefinite path: every match, in document order.
    List(Vec<&'a Json>),
    Missing,
}

/// A concrete step (negative indexes resolved).
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Key(String),
    Index(usize),
}

const CACHE_SIZE: usize = 256;

thread_local! {
    static CACHE: RefCell<HashMap<Box<str>, Rc<Path>>> = RefCell::new(HashMap::new());
}

/// Compiles a path, reusing earlier compilations of indefinite paths on this thread.
pub fn compile(path: &str) -> Result<Rc<Path>, String> {
    let segments = tokenize(path)?;
    if let Some(steps) = definite(&segments) {
        return Ok(Rc::new(Path::Definite(steps)));
    }
    if let Some(p) = CACHE.with(|c| c.borrow().get(path).cloned()) {
        return Ok(p);
    }
    let rfc = to_rfc9535(&segments);
    let compiled = JsonPath::parse(&rfc).map_err(|e| {
        format!(
            "invalid JSONPath {path:?}: {}",
            e.to_string().lines().next().unwrap_or("")
        )
    })?;
    let compiled = Rc::new(Path::Indefinite(compiled));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_SIZE {
            c.clear();
        }
        c.insert(path.into(), compiled.clone());
    });
    Ok(compiled)
}

impl Path {
    /// Whether this is `$` itself.
    pub fn is_root(&self) -> bool {
        matches!(self, Path::Definite(steps) if steps.is_empty())
    }

    pub fn find<'a>(&self, root: &'a Json) -> Found<'a> {
        match self {
            Path::Definite(steps) => {
                let mut node = root;
                let mut at = Vec::with_capacity(steps.len());
                for step in steps {
                    let next = match (node, step) {
                        (Json::Object(m), Step::Key(k)) => {
                            at.push(Resolved::Key(k.clone()));
                            m.get(k)
                        }
                        (Json::Array(a), Step::Index(i)) => {
                            let i = if *i < 0 { a.len() as i64 + i } else { *i };
                            usize::try_from(i).ok().and_then(|i| {
                                at.push(Resolved::Index(i));
                                a.get(i)
                            })
                        }
                        _ => None,
                    };
                    match next {
                        Some(n) => node = n,
                        None => return Found::Missing,
                    }
                }
                Found::Node(node, at)
            }
            Path::Indefinite(p) => Found::List(p.query(root).all()),
        }
    }
}

/// Resolves a simple definite path (`$`, `$.a.b`, `$['a'][0]`, `a.b`) without allocating.
/// Returns `None` for anything else (the caller compiles the path instead), `Some(None)` when
/// the path does not exist in `root`.
pub fn lookup_definite<'a>(path: &str, root: &'a Json) -> Option<Option<&'a Json>> {
    let p = path.trim();
    let (mut rest, mut implicit_name) = match p.strip_prefix('$') {
        Some(r) => (r, false),
        None if p.is_empty() || p.starts_with('[') => return None,
        None => (p, true),
    };
    let mut node = Some(root);
    while !rest.is_empty() || implicit_name {
        if implicit_name || rest.starts_with('.') {
            if !implicit_name {
                rest = &rest[1..];
            }
            implicit_name = false;
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let name = rest[..end].trim();
            if name.is_empty() || name == "*" {
                return None;
            }
            node = node.and_then(|n| n.as_object()?.get(name));
            rest = &rest[end..];
        } else if let Some(inner) = rest.strip_prefix('[') {
            let q = inner.chars().next()?;
            if q == '\'' || q == '"' {
                let close = inner[1..].find(q)? + 1;
                rest = inner[close + 1..].strip_prefix(']')?;
                let name = &inner[1..close];
                node = node.and_then(|n| n.as_object()?.get(name));
            } else {
                let close = inner.find(']')?;
                let i: i64 = inner[..close].parse().ok()?;
                rest = &inner[close + 1..];
                node = node.and_then(|n| {
                    let a = n.as_array()?;
                    let i = if i < 0 { a.len() as i64 + i } else { i };
                    a.get(usize::try_from(i).ok()?)
                });
            }
        } else {
            return None;
        }
    }
    Some(node)
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Name(String),
    Index(i64),
    Wildcard,
    /// `..` followed by the segment it applies to.
    Descendant(Box<Segment>),
    /// A bracket selector kept verbatim (filters, slices, unions).
    Bracket(String),
}

fn tokenize(path: &str) -> Result<Vec<Segment>, String> {
    let p = path.trim();
    let body: String = if let Some(rest) = p.strip_prefix('$') {
        rest.to_string()
    } else if p.is_empty() {
        return Err("empty JSONPath".into());
    } else if p.starts_with('[') {
        p.to_string()
    } else {
        format!(".{p}")
    };
    let s = body.as_str();
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < bytes.len() {
        let (seg, next) = match bytes[i] {
            b'.' if bytes.get(i + 1) == Some(&b'.') => {
                let (inner, next) = if bytes.get(i + 2) == Some(&b'[') {
                    bracket(s, i + 2)?
                } else {
                    name(s, i + 2)?
                };
                (Segment::Descendant(Box::new(inner)), next)
            }
            b'.' => name(s, i + 1)?,
            b'[' => bracket(s, i)?,
            _ => return Err(format!("invalid JSONPath {path:?} at offset {i}")),
        };
        out.push(seg);
        i = next;
    }
    Ok(out)
}

/// A dot name: everything up to the next `.` or `[`.
fn name(s: &str, start: usize) -> Result<(Segment, usize), String> {
    let end = s[start..].find(['.', '[']).map_or(s.len(), |i| start + i);
    let n = s[start..end].trim();
    if n.is_empty() {
        return Err(format!("empty name in JSONPath at offset {start}"));
    }
    Ok((
        if n == "*" {
            Segment::Wildcard
        } else {
            Segment::Name(n.to_string())
        },
        end,
    ))
}

/// A bracket selector, up to its matching `]` (quotes respected).
fn bracket(s: &str, start: usize) -> Result<(Segment, usize), String> {
    let mut depth = 0;
    let mut quote = None;
    for (i, c) in s[start..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    let inner = s[start + 1..start + i].trim();
                    return Ok((classify(inner), start + i + 1));
                }
            }
            _ => {}
        }
    }
    Err(format!("unclosed '[' in JSONPath at offset {start}"))
}

fn classify(inner: &str) -> Segment {
    if inner == "*" {
        return Segment::Wildcard;
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Segment::Index(i);
    }
    for q in ['\'', '"'] {
        if inner.len() >= 2 && inner.starts_with(q) && inner.ends_with(q) {
            let body = &inner[1..inner.len() - 1];
            if !body.contains(q) {
                return Segment::Name(body.to_string());
            }
        }
    }
    Segment::Bracket(inner.to_string())
}

fn definite(segments: &[Segment]) -> Option<Vec<Step>> {
    segments
        .iter()
        .map(|s| match s {
            Segment::Name(n) => Some(Step::Key(n.clone())),
            Segment::Index(i) => Some(Step::Index(*i)),
            _ => None,
        })
        .collect()
}

fn quote_name(n: &str) -> String {
    let escaped = n.replace('\\', "\\\\").replace('\'', "\\'");
    format!("['{escaped}']")
}

fn to_rfc9535(segments: &[Segment]) -> String {
    fn one(s: &Segment, out: &mut String) {
        match s {
            Segment::Name(n) => out.push_str(&quote_name(n)),
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Wildcard => out.push_str("[*]"),
            Segment::Bracket(b) => {
                out.push('[');
                out.push_str(b);
                out.push(']');
            }
            Segment::Descendant(inner) => {
                out.push_str("..");
                one(inner, out);
            }
        }
    }
    let mut out = String::from("$");
    for s in segments {
        one(s, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(path: &str, doc: &Json) -> Json {
        match compile(path).unwrap().find(doc) {
            Found::Node(n, _) => n.clone(),
            Found::List(l) => Json::Array(l.into_iter().cloned().collect()),
            Found::Missing => Json::String("<missing>".into()),
        }
    }

    #[test]
    fn definite_paths() {
        let doc = json!({"a": {"b-c": [1, 2, 3]}, "name": "x"});
        assert_eq!(eval("$", &doc), doc);
        assert_eq!(eval("$.a.b-c[1]", &doc), json!(2));
        assert_eq!(eval("$['a']['b-c'][-1]", &doc), json!(3));
        assert_eq!(eval("name", &doc), json!("x"));
        assert_eq!(eval("$.nope", &doc), json!("<missing>"));
        assert!(matches!(*compile("$.a[0]").unwrap(), Path::Definite(_)));
    }

    #[test]
    fn indefinite_paths_return_lists() {
        let doc = json!({"items": [{"p": 5, "n": "a"}, {"p": 15, "n": "b"}]});
        assert_eq!(eval("$.items[*].n", &doc), json!(["a", "b"]));
        assert_eq!(eval("$..n", &doc), json!(["a", "b"]));
        assert_eq!(eval("$.items[?(@.p < 10)].n", &doc), json!(["a"]));
        assert_eq!(eval("$.items[0:1]", &doc), json!([{"p": 5, "n": "a"}]));
        assert_eq!(eval("$.items[*].missing", &doc), json!([]));
    }

    #[test]
    fn fast_lookup_agrees_with_the_compiler() {
        let doc = json!({"a": {"b-c": [1, 2, {"d": "e"}]}, "n": "x", "q'": 1});
        for path in [
            "$",
            "$.a",
            "$.a.b-c",
            "$.a.b-c[2].d",
            "$['a']['b-c'][-1]",
            "$.a.b-c[9]",
            "n",
            "a.b-c[0]",
            "$.missing.deeper",
            "$[\"q'\"]",
            "$.n.x",
            "$.a.b-c[-9]",
            " $.n ",
        ] {
            let fast = lookup_definite(path, &doc).unwrap_or_else(|| panic!("{path} not fast"));
            let slow = match compile(path).unwrap().find(&doc) {
                Found::Node(n, _) => Some(n),
                Found::Missing => None,
                Found::List(_) => panic!("{path} is definite"),
            };
            assert_eq!(fast, slow, "{path}");
        }
        for path in [
            "$..a",
            "$.a[*]",
            "$.a[0,1]",
            "$.a[?(@.x)]",
            "$.a[0:1]",
            "",
            "$.a[",
            "$.*",
        ] {
            assert!(lookup_definite(path, &doc).is_none(), "{path}");
        }
    }

    #[test]
    fn bad_paths_are_errors() {
        assert!(compile("").is_err());
        assert!(compile("$.a[").is_err());
        assert!(compile("$.a[?(@.x =~ /re/)]").is_err());
    }
}
