//! The requests the linter renders a template against: a body shaped like what the
//! template reads (the JSONPaths of `$input.path`/`$input.json`, the fields of variables
//! bound to them and of loop variables over them, and the route's model's properties), and
//! parameters for every `$input.params('name')`. Each leaf then takes hostile but legal
//! values in turn.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};

/// A position in the body: object keys and array elements (`[*]`: every element).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Key(String),
    Each,
}

pub type Path = Vec<Step>;

/// What a template reads: body paths, and parameter names.
#[derive(Debug, Default, Clone)]
pub struct Reads {
    pub paths: Vec<Path>,
    pub params: Vec<String>,
    /// The template iterates or reads the query string as a whole.
    pub whole_query: bool,
}

/// The paths and parameters a template reads, found in its source.
pub fn reads(source: &str) -> Reads {
    let mut out = Reads::default();
    // Variables bound to body paths: `#set($v = $input.path('P'))` and
    // `#foreach($v in $input.path('P'))` (each element), then loops over their fields.
    let mut bound: BTreeMap<String, Path> = BTreeMap::new();
    let input_call =
        regex::Regex::new(r#"\$!?\{?input\.(path|json)\(\s*(?:'([^']*)'|"([^"]*)")\s*\)"#)
            .expect("a valid pattern");
    let set = regex::Regex::new(
        r#"#\{?set\}?\s*\(\s*\$!?\{?([A-Za-z_][\w-]*)\}?\s*=\s*\$!?\{?input\.path\(\s*(?:'([^']*)'|"([^"]*)")\s*\)"#,
    )
    .expect("a valid pattern");
    let each = regex::Regex::new(
        r#"#\{?foreach\}?\s*\(\s*\$!?\{?([A-Za-z_][\w-]*)\}?\s+in\s+\$!?\{?([A-Za-z_][\w-]*)((?:\.[A-Za-z_][\w-]*)*)(?:\.path\(\s*(?:'([^']*)'|"([^"]*)")\s*\))?"#,
    )
    .expect("a valid pattern");
    for c in set.captures_iter(source) {
        let p = jsonpath(c.get(2).or(c.get(3)).map_or("$", |m| m.as_str()));
        bound.insert(c[1].to_string(), p.clone());
        out.paths.push(p);
    }
    // Loops may nest over earlier bindings: a few rounds settle them.
    for _ in 0..3 {
        for c in each.captures_iter(source) {
            let var = c[1].to_string();
            let root = &c[2];
            let props = c.get(3).map_or("", |m| m.as_str());
            let mut p = if root == "input" {
                match c.get(4).or(c.get(5)) {
                    Some(m) => jsonpath(m.as_str()),
                    None => continue,
                }
            } else if let Some(b) = bound.get(root) {
                let mut p = b.clone();
                p.extend(
                    props
                        .split('.')
                        .filter(|s| !s.is_empty())
                        .map(|s| Step::Key(s.to_string())),
                );
                p
            } else {
                continue;
            };
            p.push(Step::Each);
            bound.insert(var, p);
        }
    }
    for c in input_call.captures_iter(source) {
        out.paths
            .push(jsonpath(c.get(2).or(c.get(3)).map_or("$", |m| m.as_str())));
    }
    // Fields read through bound variables: `$v.a.b` (up to a method call).
    let field = regex::Regex::new(r"\$!?\{?([A-Za-z_][\w-]*)((?:\.[A-Za-z_][\w-]*)+)")
        .expect("a valid pattern");
    for c in field.captures_iter(source) {
        let Some(base) = bound.get(&c[1]) else {
            continue;
        };
        let mut p = base.clone();
        let end = c.get(2).map_or(0, |m| m.end());
        let props: Vec<&str> = c[2].split('.').filter(|s| !s.is_empty()).collect();
        // A trailing name followed by `(` is a method, not a field.
        let method = source[end..].starts_with('(');
        let keep = props.len() - usize::from(method);
        p.extend(props[..keep].iter().map(|s| Step::Key((*s).to_string())));
        out.paths.push(p);
    }
    // Loop variables used whole are leaves too.
    for p in bound.values() {
        out.paths.push(p.clone());
    }
    let param = regex::Regex::new(r#"\$!?\{?input\.params\(\s*(?:'([^']*)'|"([^"]*)")\s*\)"#)
        .expect("a valid pattern");
    for c in param.captures_iter(source) {
        let name = c.get(1).or(c.get(2)).map_or("", |m| m.as_str()).to_string();
        if !out.params.contains(&name) {
            out.params.push(name);
        }
    }
    out.whole_query = source.contains("params().querystring")
        || source.contains("params().get('querystring')")
        || source.contains("params().get(\"querystring\")");
    out.paths.sort();
    out.paths.dedup();
    out
}

/// A definite JSONPath as steps (`$.a.b[0]`, `$['a']`, `$.a[*]`); what it cannot follow
/// (filters, deep scans) ends it.
pub fn jsonpath(p: &str) -> Path {
    let p = p.trim();
    // A path without `$` is relative to the root (API Gateway prepends `$.`).
    let owned;
    let p = if p.starts_with('$') {
        p
    } else {
        owned = format!("$.{p}");
        owned.as_str()
    };
    let mut rest = &p[1..];
    let mut out = Vec::new();
    loop {
        if rest.starts_with("..") {
            break;
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 || &r[..end] == "*" {
                if &r[..end] == "*" {
                    out.push(Step::Each);
                }
                rest = &r[end..];
                if end == 0 {
                    break;
                }
                continue;
            }
            out.push(Step::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else { break };
            let inner = r[..close].trim();
            if let Some(name) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                out.push(Step::Key(name.to_string()));
            } else if inner == "*" || inner.parse::<i64>().is_ok() || inner.starts_with('$') {
                out.push(Step::Each);
            } else {
                break;
            }
            rest = &r[close + 1..];
        } else {
            break;
        }
    }
    out
}

/// The properties a model describes, as paths (objects' properties and arrays' items, one
/// level of `$ref` into `definitions` at a time, a few levels deep).
pub fn model_paths(schema: &Json) -> Vec<Path> {
    fn walk(schema: &Json, root: &Json, at: &Path, out: &mut Vec<Path>, depth: usize) {
        if depth > 6 {
            return;
        }
        let schema = match schema.get("$ref").and_then(Json::as_str) {
            Some(r) => r
                .strip_prefix("#/")
                .and_then(|p| root.pointer(&format!("/{p}")))
                .unwrap_or(&Json::Null),
            None => schema,
        };
        if let Some(props) = schema.get("properties").and_then(Json::as_object) {
            for (k, v) in props {
                let mut p = at.clone();
                p.push(Step::Key(k.clone()));
                out.push(p.clone());
                walk(v, root, &p, out, depth + 1);
            }
        }
        if let Some(items) = schema.get("items") {
            let mut p = at.clone();
            p.push(Step::Each);
            walk(items, root, &p, out, depth + 1);
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            for s in schema
                .get(key)
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                walk(s, root, at, out, depth + 1);
            }
        }
    }
    let mut out = Vec::new();
    walk(schema, schema, &Vec::new(), &mut out, 0);
    out
}

/// The paths a model gives a type (`object`, `string`, `number`, `integer`, `boolean`):
/// the linter puts a value of that type there (an object, so one printed whole shows up).
pub fn model_types(schema: &Json) -> Vec<(Path, String)> {
    fn resolve<'a>(s: &'a Json, root: &'a Json) -> &'a Json {
        match s.get("$ref").and_then(Json::as_str) {
            Some(r) => r
                .strip_prefix("#/")
                .and_then(|p| root.pointer(&format!("/{p}")))
                .unwrap_or(&Json::Null),
            None => s,
        }
    }
    let mut out = Vec::new();
    for p in model_paths(schema) {
        let mut node = schema;
        for step in &p {
            node = resolve(node, schema);
            node = match step {
                Step::Key(k) => node
                    .pointer(&format!(
                        "/properties/{}",
                        k.replace('~', "~0").replace('/', "~1")
                    ))
                    .unwrap_or(&Json::Null),
                Step::Each => node.get("items").unwrap_or(&Json::Null),
            };
        }
        if let Some(t) = resolve(node, schema).get("type").and_then(Json::as_str) {
            out.push((p, t.to_string()));
        }
    }
    out
}

/// The key of the objects the linter puts where a model has objects: a Java map's print
/// of one (`{lintkey=...}`) is unmistakable.
pub const OBJECT_KEY: &str = "lintkey";

/// How a leaf is written by the template: inside a JSON string, or bare (a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
}

/// The value every string leaf gets in one variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain,
    Apostrophe,
    Quote,
    Backslash,
    LineSeparator,
    NonAscii,
    ControlCharacters,
    Empty,
    NumberAsString,
    NoElements,
    OneElement,
    Missing,
}

impl Variant {
    pub const ALL: [Variant; 12] = [
        Variant::Plain,
        Variant::Apostrophe,
        Variant::Quote,
        Variant::Backslash,
        Variant::LineSeparator,
        Variant::NonAscii,
        Variant::ControlCharacters,
        Variant::Empty,
        Variant::NumberAsString,
        Variant::NoElements,
        Variant::OneElement,
        Variant::Missing,
    ];

    /// A text leaf's value.
    pub fn text(self) -> &'static str {
        match self {
            Variant::Apostrophe => "it's",
            Variant::Quote => "say \"hi\"",
            Variant::Backslash => "C:\\temp\\new",
            Variant::LineSeparator => "a\u{2028}b",
            Variant::NonAscii => "naïve café ☃ 日本",
            Variant::ControlCharacters => "line 1\nline 2\ttab",
            Variant::Empty => "",
            Variant::NumberAsString => "42",
            _ => "sample",
        }
    }

    fn elements(self) -> usize {
        match self {
            Variant::NoElements => 0,
            Variant::OneElement => 1,
            _ => 2,
        }
    }
}

/// A body with every path of `paths`, leaf `i` (in [`leaves`]' order) `leaf(i)`, arrays of
/// `elements` elements; the leaves.
pub fn body(
    paths: &[Path],
    elements: usize,
    leaf: &mut dyn FnMut(usize) -> Json,
) -> (Json, Vec<Path>) {
    let leaves = leaves(paths);
    let mut root = Json::Null;
    for (i, p) in leaves.iter().enumerate() {
        let value = leaf(i);
        insert(&mut root, p, &value, elements);
    }
    if root.is_null() {
        root = json!({});
    }
    (root, leaves)
}

fn insert(node: &mut Json, path: &[Step], value: &Json, elements: usize) {
    let Some((first, rest)) = path.split_first() else {
        if node.is_null() {
            *node = value.clone();
        }
        return;
    };
    match first {
        Step::Key(k) => {
            if !node.is_object() {
                *node = Json::Object(Map::new());
            }
            if let Json::Object(m) = node {
                let slot = m.entry(k.clone()).or_insert(Json::Null);
                insert(slot, rest, value, elements);
            }
        }
        Step::Each => {
            if !node.is_array() {
                *node = Json::Array(vec![Json::Null; elements]);
            }
            if let Json::Array(items) = node {
                for item in items {
                    insert(item, rest, value, elements);
                }
            }
        }
    }
}

/// One variant's body: text leaves take the variant's value, number leaves 1 (or "42" as a
/// string for [`Variant::NumberAsString`]); [`Variant::Missing`] leaves every field out.
pub fn variant_body(
    paths: &[Path],
    types: &[(Path, String)],
    kinds: &[Kind],
    variant: Variant,
) -> Json {
    if variant == Variant::Missing {
        return json!({});
    }
    let leaves = leaves(paths);
    body(paths, variant.elements(), &mut |i| {
        let typed = leaves
            .get(i)
            .and_then(|p| types.iter().find(|(q, _)| q == p))
            .map(|(_, t)| t.as_str());
        match typed {
            Some("object") => return json!({ OBJECT_KEY: variant.text() }),
            Some("integer" | "number") => return json!(1),
            Some("boolean") => return json!(true),
            Some("string") => return json!(variant.text()),
            _ => {}
        }
        match kinds.get(i).copied().unwrap_or(Kind::Text) {
            Kind::Number if variant == Variant::NumberAsString => json!("42"),
            Kind::Number => json!(1),
            Kind::Text => json!(variant.text()),
        }
    })
    .0
}

/// The paths no other path extends, in order.
pub fn leaves(paths: &[Path]) -> Vec<Path> {
    paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q.len() > p.len() && q.starts_with(p)))
        .cloned()
        .collect()
}

/// A body whose leaves are markers, to see where the template writes each one.
pub fn marker_body(paths: &[Path]) -> (Json, usize) {
    let (b, leaves) = body(paths, 2, &mut |i| json!(marker(i)));
    (b, leaves.len())
}

pub fn marker(i: usize) -> String {
    format!("zqleaf{i}zq")
}

/// Whether each marker appears inside a JSON string in `output` (or not at all: text).
pub fn kinds_from_markers(output: &str, leaves: usize) -> Vec<Kind> {
    (0..leaves)
        .map(|i| match output.find(&marker(i)) {
            Some(at) if !inside_string(&output[..at]) => Kind::Number,
            _ => Kind::Text,
        })
        .collect()
}

/// Whether the end of `prefix` is inside a JSON string.
fn inside_string(prefix: &str) -> bool {
    let mut inside = false;
    let mut escaped = false;
    for c in prefix.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if inside => escaped = true,
            '"' => inside = !inside,
            _ => {}
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Step {
        Step::Key(s.into())
    }

    #[test]
    fn reads_paths_loops_fields_and_params() {
        let r = reads(
            "#set($root = $input.path('$'))#foreach($e in $root.events)$e.name $e.page.size()#end $input.json('$.user.id') $input.params('partner')",
        );
        assert!(
            r.paths
                .contains(&vec![key("events"), Step::Each, key("name")])
        );
        assert!(
            r.paths
                .contains(&vec![key("events"), Step::Each, key("page")])
        );
        assert!(r.paths.contains(&vec![key("user"), key("id")]));
        assert_eq!(r.params, vec!["partner".to_string()]);
        assert_eq!(
            jsonpath("$.a['b c'][0].d"),
            vec![key("a"), key("b c"), Step::Each, key("d")]
        );
        assert_eq!(jsonpath("a.b"), vec![key("a"), key("b")]);
    }

    #[test]
    fn markers_tell_strings_from_bare_values() {
        let out = format!("{{\"a\": \"x{}\", \"n\": {}}}", marker(0), marker(1));
        assert_eq!(
            kinds_from_markers(&out, 3),
            vec![Kind::Text, Kind::Number, Kind::Text]
        );
    }
}
