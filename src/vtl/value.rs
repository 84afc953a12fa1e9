//! Runtime values, with Java's semantics where templates can observe them.
//!
//! Two kinds of containers exist:
//! - native lists and maps, made by literals (`[1, 2]`, `{"a": 1}`) and by methods such as
//!   `split` or `keySet`; shared by reference like Java objects;
//! - [`JsonRef`]s: views into a parsed JSON document (the request body, `$context`,
//!   `$util.parseJson` results). A view is the document plus a path, so a change made through
//!   one view (`#set($b.x = 1)`, `$b.put(..)`) is seen by every other view and by a later
//!   `$input.json('$')`, which is how API Gateway behaves. Scalars are copied out on access.
//!
//! Printing follows what API Gateway prints: native maps `{k=v, k2=v2}`, native lists
//! `[a, b]`, JSON arrays as compact JSON, JSON objects in the map form, doubles as Java's
//! `Double.toString`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use super::ast::DefineId;
use super::error::{Error, ErrorKind};

/// Values nested deeper than this cannot be printed, compared or converted.
pub(crate) const MAX_VALUE_DEPTH: usize = 128;

pub(crate) type List = Rc<RefCell<Vec<Value>>>;
pub(crate) type Map = Rc<RefCell<IndexMap<Rc<str>, Value>>>;

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A number from a JSON document that no `i64` or double holds exactly (an integer past
    /// 64 bits, more digits than a double keeps, `-0`, `2e-400`): it prints as it was sent
    /// and computes as the nearest double, so data passing through is never altered.
    Exact(Rc<str>),
    Str(Rc<str>),
    List(List),
    Map(Map),
    Json(JsonRef),
    /// A `Map.Entry` from `entrySet()`.
    Entry(Rc<(Rc<str>, Value)>),
    /// `$foreach`: the state of the innermost loop.
    Loop(LoopInfo),
    /// A `#define` block, rendered when used.
    Define(DefineId),
    /// An object provided by the embedding application (`$input`, `$util`).
    Host(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopInfo {
    pub index: usize,
    pub len: usize,
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }

    pub fn string(s: String) -> Value {
        Value::Str(Rc::from(s))
    }

    pub fn new_list(items: Vec<Value>) -> Value {
        Value::List(Rc::new(RefCell::new(items)))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Velocity 1.7 truthiness: only `false` and null are false.
    pub fn is_truthy(&self) -> bool {
        !matches!(self, Value::Bool(false) | Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer argument, as Java would unbox it.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Exact(text) => text.parse().ok(),
            _ => None,
        }
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_) | Value::Exact(_))
    }

    /// Java's `toString()` of the value; null prints as `null`.
    pub fn to_java_string(&self) -> Result<String, Error> {
        let mut out = String::new();
        write_java(self, &mut out, 0)?;
        Ok(out)
    }

    /// Converts to JSON (for storing into a JSON document or comparing containers).
    pub fn to_json(&self) -> Result<Json, Error> {
        to_json(self, 0)
    }

    /// A value for a JSON node found at `path` in `doc`: scalars are copied, containers are
    /// views.
    pub fn from_json_node(doc: &Doc, path: Rc<[Seg]>, node: &Json) -> Value {
        match node {
            Json::Array(_) | Json::Object(_) => Value::Json(JsonRef {
                doc: doc.clone(),
                path,
            }),
            scalar => Value::from_json_scalar(scalar),
        }
    }

    /// A standalone value for any JSON, as a new document when it is a container.
    pub fn from_json(json: Json) -> Value {
        match json {
            Json::Array(_) | Json::Object(_) => Value::Json(JsonRef::root(new_doc(json))),
            scalar => Value::from_json_scalar(&scalar),
        }
    }

    fn from_json_scalar(node: &Json) -> Value {
        match node {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::from_json_number(n),
            Json::String(s) => Value::str(s),
            Json::Array(_) | Json::Object(_) => Value::Null,
        }
    }
}

impl Value {
    /// A JSON number as the closest Java type that holds it exactly: a long, a double, or (when
    /// neither does) the text itself.
    pub fn from_json_number(n: &serde_json::Number) -> Value {
        let text = n.as_str();
        if !text.contains(['.', 'e', 'E']) {
            return match text.parse::<i64>() {
                Ok(i) if text != "-0" => Value::Int(i),
                _ => Value::Exact(Rc::from(text)),
            };
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() && same_decimal(text, &format!("{f:e}")) => Value::Float(f),
            _ => Value::Exact(Rc::from(text)),
        }
    }
}

/// Whether two decimal literals denote the same number (a double's shortest form against the
/// text it was parsed from).
fn same_decimal(a: &str, b: &str) -> bool {
    decimal_parts(a) == decimal_parts(b)
}

/// A decimal literal as (negative, significant digits, exponent of the first digit); zero has
/// no digits and no sign.
fn decimal_parts(text: &str) -> Option<(bool, String, i64)> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0');
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    let point = i64::try_from(int.len()).ok()? - i64::try_from(leading).ok()?;
    Some((negative, digits.to_string(), exp.checked_add(point)?))
}

/// A shared, mutable JSON document that remembers whether a template changed it.
pub type Doc = Rc<DocCell>;

#[derive(Debug)]
pub struct DocCell {
    json: RefCell<Json>,
    mutated: std::cell::Cell<bool>,
    /// API Gateway's `$context`: its nested objects (`identity`, `requestOverride` and its
    /// maps, `responseOverride`; not `authorizer`) print as the empty string.
    context: bool,
}

impl DocCell {
    pub fn borrow(&self) -> std::cell::Ref<'_, Json> {
        self.json.borrow()
    }

    /// Mutable access; marks the document as changed.
    pub fn borrow_mut(&self) -> std::cell::RefMut<'_, Json> {
        self.mutated.set(true);
        self.json.borrow_mut()
    }

    /// Whether a template changed the document since it was created.
    pub fn is_mutated(&self) -> bool {
        self.mutated.get()
    }
}

pub fn new_doc(json: Json) -> Doc {
    Rc::new(DocCell {
        json: RefCell::new(json),
        mutated: std::cell::Cell::new(false),
        context: false,
    })
}

/// A document printed as API Gateway prints `$context`: its nested maps as empty strings.
pub fn new_context_doc(json: Json) -> Doc {
    Rc::new(DocCell {
        json: RefCell::new(json),
        mutated: std::cell::Cell::new(false),
        context: true,
    })
}

impl JsonRef {
    /// Whether this is a map of `$context` that prints as the empty string, as recorded on
    /// API Gateway: `identity`, `requestOverride` and `responseOverride` themselves, and
    /// the empty maps inside them (`authorizer` prints as any map).
    fn prints_blank(&self, node: &Json) -> bool {
        if !self.doc.context {
            return false;
        }
        let Json::Object(map) = node else {
            return false;
        };
        let outside_authorizer = self
            .path
            .first()
            .is_some_and(|s| !matches!(s, Seg::Key(k) if &**k == "authorizer"));
        outside_authorizer && (self.path.len() == 1 || map.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(Rc<str>),
    Index(usize),
}

/// A view of the container at `path` inside `doc`.
#[derive(Clone, Debug)]
pub struct JsonRef {
    pub doc: Doc,
    pub path: Rc<[Seg]>,
}

impl JsonRef {
    pub fn root(doc: Doc) -> JsonRef {
        JsonRef {
            doc,
            path: Rc::from(Vec::new()),
        }
    }

    /// Runs `f` on the node this view points at (`None` if the document changed shape so
    /// that the path no longer exists).
    pub fn with<R>(&self, f: impl FnOnce(Option<&Json>) -> R) -> R {
        let doc = self.doc.borrow();
        f(walk(&doc, &self.path))
    }

    pub fn with_mut<R>(&self, f: impl FnOnce(Option<&mut Json>) -> R) -> R {
        let mut doc = self.doc.borrow_mut();
        f(walk_mut(&mut doc, &self.path))
    }

    pub fn child_path(&self, seg: Seg) -> Rc<[Seg]> {
        let mut p = Vec::with_capacity(self.path.len() + 1);
        p.extend(self.path.iter().cloned());
        p.push(seg);
        Rc::from(p)
    }

    /// `$view.name`: a copy for scalars, a view for containers; null when missing.
    pub fn child_key(&self, name: &str) -> Value {
        self.child_by(|n| n.as_object()?.get(name), || Seg::Key(Rc::from(name)))
    }

    /// `$view[i]`: a copy for scalars, a view for containers; null when missing.
    pub fn child_index(&self, i: usize) -> Value {
        self.child_by(|n| n.as_array()?.get(i), || Seg::Index(i))
    }

    /// Finds a child with one walk; builds the child's path only when it is a container.
    fn child_by(
        &self,
        find: impl FnOnce(&Json) -> Option<&Json>,
        seg: impl FnOnce() -> Seg,
    ) -> Value {
        self.with(|node| match node.and_then(find) {
            None => Value::Null,
            Some(Json::Array(_) | Json::Object(_)) => Value::Json(JsonRef {
                doc: self.doc.clone(),
                path: self.child_path(seg()),
            }),
            Some(scalar) => Value::from_json_scalar(scalar),
        })
    }

    pub fn is_array(&self) -> bool {
        self.with(|n| matches!(n, Some(Json::Array(_))))
    }

    pub fn is_object(&self) -> bool {
        self.with(|n| matches!(n, Some(Json::Object(_))))
    }

    pub fn to_json(&self) -> Json {
        self.with(|n| n.cloned().unwrap_or(Json::Null))
    }
}

fn walk<'a>(mut node: &'a Json, path: &[Seg]) -> Option<&'a Json> {
    for seg in path {
        node = match (node, seg) {
            (Json::Object(m), Seg::Key(k)) => m.get(&**k)?,
            (Json::Array(a), Seg::Index(i)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

fn walk_mut<'a>(mut node: &'a mut Json, path: &[Seg]) -> Option<&'a mut Json> {
    for seg in path {
        node = match (node, seg) {
            (Json::Object(m), Seg::Key(k)) => m.get_mut(&**k)?,
            (Json::Array(a), Seg::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

fn too_deep() -> Error {
    Error::new(
        ErrorKind::DepthLimit,
        format!("value nested deeper than {MAX_VALUE_DEPTH} levels"),
    )
}

fn to_json(v: &Value, depth: usize) -> Result<Json, Error> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep());
    }
    Ok(match v {
        Value::Null | Value::Host(_) | Value::Define(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        // The text came from a parsed JSON number.
        Value::Exact(text) => {
            Json::Number(serde_json::Number::from_string_unchecked(text.to_string()))
        }
        Value::Str(s) => Json::String(s.to_string()),
        Value::List(l) => Json::Array(
            l.borrow()
                .iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m.borrow().iter() {
                out.insert(k.to_string(), to_json(v, depth + 1)?);
            }
            Json::Object(out)
        }
        Value::Json(r) => r.to_json(),
        Value::Entry(e) => {
            let mut out = serde_json::Map::new();
            out.insert(e.0.to_string(), to_json(&e.1, depth + 1)?);
            Json::Object(out)
        }
        Value::Loop(l) => serde_json::json!({"index": l.index, "count": l.index + 1}),
    })
}

/// Writes Java's `toString()` of `v`.
pub(crate) fn write_java(v: &Value, out: &mut String, depth: usize) -> Result<(), Error> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep());
    }
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => write_java_double(*f, out),
        Value::Exact(text) => out.push_str(text),
        Value::Str(s) => out.push_str(s),
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.borrow().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_java(item, out, depth + 1)?;
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, item)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                write_java(item, out, depth + 1)?;
            }
            out.push('}');
        }
        Value::Json(r) => r.with(|node| match node {
            Some(n) if r.prints_blank(n) => Ok(()),
            Some(n) => write_json_java(n, out, depth),
            None => {
                out.push_str("null");
                Ok(())
            }
        })?,
        Value::Entry(e) => {
            out.push_str(&e.0);
            out.push('=');
            write_java(&e.1, out, depth + 1)?;
        }
        Value::Loop(_) | Value::Define(_) | Value::Host(_) => {}
    }
    Ok(())
}

/// JSON as API Gateway prints it from `$input.path`: objects as Java maps, arrays as compact
/// JSON.
fn write_json_java(node: &Json, out: &mut String, depth: usize) -> Result<(), Error> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep());
    }
    match node {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => write_json_number(n, out),
        Json::String(s) => out.push_str(s),
        Json::Array(_) => {
            // serde_json cannot fail writing a Value to a String.
            out.push_str(&serde_json::to_string(node).unwrap_or_default());
        }
        Json::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                write_json_java(v, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_json_number(n: &serde_json::Number, out: &mut String) {
    match Value::from_json_number(n) {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => write_java_double(f, out),
        _ => out.push_str(n.as_str()),
    }
}

/// Java's `Double.toString`: plain notation with at least one fraction digit for
/// 1e-3 <= |x| < 1e7, otherwise `d.dddE±n`; shortest digits that round-trip.
pub fn write_java_double(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
    } else if (1e-3..1e7).contains(&f.abs()) {
        let s = format!("{f}");
        out.push_str(&s);
        if !s.contains('.') {
            out.push_str(".0");
        }
    } else {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        out.push_str(mantissa);
        if !mantissa.contains('.') {
            out.push_str(".0");
        }
        out.push('E');
        out.push_str(exp);
    }
}

/// Velocity 1.7 equality: numbers by value, same-kind values by value, anything else by
/// comparing their `toString()`.
pub(crate) fn values_equal(a: &Value, b: &Value) -> Result<bool, Error> {
    use Value::*;
    Ok(match (a, b) {
        (Null, Null) => true,
        (Null, _) | (_, Null) => false,
        (Int(x), Int(y)) => x == y,
        (x, y) if x.is_number() && y.is_number() => x.as_f64() == y.as_f64(),
        (Bool(x), Bool(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        (x, y) if is_container(x) && is_container(y) => x.to_json()? == y.to_json()?,
        (x, y) => x.to_java_string()? == y.to_java_string()?,
    })
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::List(_) | Value::Map(_) | Value::Json(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(f: f64) -> String {
        let mut s = String::new();
        write_java_double(f, &mut s);
        s
    }

    fn num(text: &str) -> Value {
        Value::from_json_number(&text.parse().unwrap())
    }

    #[test]
    fn json_numbers_keep_their_value() {
        assert!(matches!(num("42"), Value::Int(42)));
        assert!(matches!(num("-7"), Value::Int(-7)));
        assert!(matches!(num("1.5"), Value::Float(f) if f == 1.5));
        assert!(matches!(num("1.50"), Value::Float(f) if f == 1.5));
        assert!(matches!(num("1e5"), Value::Float(f) if f == 1e5));
        assert!(matches!(num("0.1"), Value::Float(f) if f == 0.1));
        assert!(matches!(num("-0.0"), Value::Float(f) if f == 0.0 && f.is_sign_negative()));
        for exact in [
            "12345678901234567890123",
            "18446744073709551615",
            "-0",
            "2e-400",
            "1e+400",
            "0.10000000000000000001",
            "3.141592653589793238462643",
        ] {
            let v = num(exact);
            assert!(matches!(v, Value::Exact(_)), "{exact}: {v:?}");
            assert_eq!(v.to_java_string().unwrap(), exact);
            assert_eq!(v.to_json().unwrap().to_string(), exact);
        }
        assert_eq!(
            num("12345678901234567890123").as_f64(),
            Some(1.2345678901234568e22)
        );
    }

    #[test]
    fn decimal_literals_compare_by_value() {
        assert!(same_decimal("100", "1e2"));
        assert!(same_decimal("0.00150", "1.5e-3"));
        assert!(same_decimal("-0.0", "0e0"));
        assert!(!same_decimal("2e-400", "0e0"));
        assert!(!same_decimal("1.00000000000000000001", "1e0"));
        assert!(!same_decimal("-1", "1e0"));
    }

    #[test]
    fn java_double_formatting() {
        assert_eq!(d(2.0), "2.0");
        assert_eq!(d(3.75), "3.75");
        assert_eq!(d(0.05), "0.05");
        assert_eq!(d(1e7), "1.0E7");
        assert_eq!(d(1.5e-5), "1.5E-5");
        assert_eq!(d(-0.001), "-0.001");
        assert_eq!(d(1234567.5), "1234567.5");
        assert_eq!(d(f64::INFINITY), "Infinity");
        assert_eq!(d(-0.0), "-0.0");
    }

    #[test]
    fn json_views_share_mutations() {
        let v = Value::from_json(serde_json::json!({"a": {"b": 1}}));
        let Value::Json(root) = v else { panic!() };
        let Value::Json(a) = root.child_key("a") else {
            panic!()
        };
        a.with_mut(|n| {
            n.unwrap()
                .as_object_mut()
                .unwrap()
                .insert("c".into(), 2.into())
        });
        assert_eq!(root.to_json(), serde_json::json!({"a": {"b": 1, "c": 2}}));
    }

    #[test]
    fn printing_matches_api_gateway() {
        let v = Value::from_json(serde_json::json!({"a": null, "b": [{"x": 1}], "c": {"d": "e"}}));
        assert_eq!(
            v.to_java_string().unwrap(),
            r#"{a=null, b=[{"x":1}], c={d=e}}"#
        );
        let l = Value::new_list(vec![Value::Int(1), Value::str("a"), Value::Bool(true)]);
        assert_eq!(l.to_java_string().unwrap(), "[1, a, true]");
    }
}
