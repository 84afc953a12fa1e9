//! The Java methods templates call on values (`$s.replaceAll(..)`, `$list.size()`,
//! `$map.keySet()`, ...). A method that does not exist returns `Ok(None)`, which the
//! evaluator renders as empty, like API Gateway. A method that would throw in Java (an index
//! out of range, a bad regex) is a template error.

use std::rc::Rc;

use serde_json::Value as Json;

use super::error::{Error, ErrorKind};
use super::eval::Eval;
use super::java::{self, Utf16};
use super::value::{JsonRef, Value, values_equal};

type Call = Result<Option<Value>, Error>;

fn runtime(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Runtime, detail)
}

fn out_of_range(method: &str, index: i64, len: usize) -> Error {
    runtime(format!(
        "{method}: index {index} out of range for length {len}"
    ))
}

pub(crate) fn call(ev: &mut Eval<'_>, recv: &Value, name: &str, args: &[Value]) -> Call {
    match recv {
        Value::Str(s) => string_method(ev, s, name, args),
        Value::Int(_) | Value::Float(_) | Value::Exact(_) => number_method(recv, name, args),
        Value::Bool(b) => Ok(match (name, args) {
            ("toString", []) => Some(Value::str(if *b { "true" } else { "false" })),
            ("booleanValue", []) => Some(Value::Bool(*b)),
            ("equals", [o]) => Some(Value::Bool(matches!(o, Value::Bool(x) if x == b))),
            _ => None,
        }),
        Value::List(_) => list_method(ev, recv, name, args),
        Value::Map(_) => map_method(ev, recv, name, args),
        Value::Json(r) => {
            if r.is_array() {
                list_method(ev, recv, name, args)
            } else if r.is_object() {
                map_method(ev, recv, name, args)
            } else {
                Ok(None)
            }
        }
        Value::Entry(e) => Ok(match (name, args) {
            ("getKey", []) => Some(Value::Str(e.0.clone())),
            ("getValue", []) => Some(e.1.clone()),
            ("toString", []) => Some(Value::string(recv.to_java_string()?)),
            _ => None,
        }),
        Value::Loop(l) => Ok(match (name, args) {
            ("hasNext" | "getHasNext", []) => Some(Value::Bool(l.index + 1 < l.len)),
            ("isFirst" | "getFirst", []) => Some(Value::Bool(l.index == 0)),
            ("isLast" | "getLast", []) => Some(Value::Bool(l.index + 1 == l.len)),
            ("getIndex", []) => Some(Value::Int(l.index as i64)),
            ("getCount", []) => Some(Value::Int(l.index as i64 + 1)),
            _ => None,
        }),
        Value::Host(id) => ev.host_call(*id, name, args),
        Value::Null | Value::Define(_) => Ok(None),
    }
}

/// A string argument, as Java would see it after Velocity's conversions.
fn text(v: &Value) -> Result<Rc<str>, Error> {
    Ok(match v {
        Value::Str(s) => s.clone(),
        other => Rc::from(other.to_java_string()?),
    })
}

fn int(v: &Value, method: &str) -> Result<i64, Error> {
    v.as_int()
        .ok_or_else(|| runtime(format!("{method}: expected an integer argument")))
}

fn string_method(ev: &mut Eval<'_>, s: &Rc<str>, name: &str, args: &[Value]) -> Call {
    let v = match (name, args) {
        ("length", []) => Value::Int(Utf16::new(s).len() as i64),
        ("isEmpty", []) => Value::Bool(s.is_empty()),
        ("isBlank", []) => Value::Bool(s.chars().all(char::is_whitespace)),
        ("toString" | "intern", []) => Value::Str(s.clone()),
        ("toLowerCase", []) => Value::string(s.to_lowercase()),
        ("toUpperCase", []) => Value::string(s.to_uppercase()),
        ("trim", []) => Value::str(java::trim(s)),
        ("hashCode", []) => Value::Int(i64::from(java::hash_code(s))),
        ("charAt", [i]) => {
            let u = Utf16::new(s);
            let i = int(i, name)?;
            if i < 0 || i as usize >= u.len() {
                return Err(out_of_range(name, i, u.len()));
            }
            Value::string(u.slice(i as usize, i as usize + 1))
        }
        ("substring", [a]) | ("substring", [a, _]) => {
            let u = Utf16::new(s);
            let start = int(a, name)?;
            let end = match args.get(1) {
                Some(b) => int(b, name)?,
                None => u.len() as i64,
            };
            if start < 0 || end > u.len() as i64 || start > end {
                return Err(runtime(format!(
                    "substring: begin {start}, end {end}, length {}",
                    u.len()
                )));
            }
            Value::string(u.slice(start as usize, end as usize))
        }
        ("indexOf", [n]) | ("indexOf", [n, _]) => {
            let from = match args.get(1) {
                Some(f) => int(f, name)?.max(0) as usize,
                None => 0,
            };
            let idx = Utf16::new(s).index_of(&text(n)?, from);
            Value::Int(idx.map_or(-1, |i| i as i64))
        }
        ("lastIndexOf", [n]) => {
            let idx = Utf16::new(s).last_index_of(&text(n)?);
            Value::Int(idx.map_or(-1, |i| i as i64))
        }
        ("contains", [n]) => Value::Bool(s.contains(&*text(n)?)),
        ("startsWith", [p]) => Value::Bool(s.starts_with(&*text(p)?)),
        ("startsWith", [p, off]) => {
            let u = Utf16::new(s);
            let off = int(off, name)?;
            let ok = off >= 0
                && (off as usize) <= u.len()
                && u.slice(off as usize, u.len()).starts_with(&*text(p)?);
            Value::Bool(ok)
        }
        ("endsWith", [p]) => Value::Bool(s.ends_with(&*text(p)?)),
        ("equals", [o]) => Value::Bool(matches!(o, Value::Str(x) if x == s)),
        ("equalsIgnoreCase", [o]) => Value::Bool(match o {
            Value::Str(x) => x.to_lowercase() == s.to_lowercase(),
            _ => false,
        }),
        ("compareTo", [o]) => {
            let o = text(o)?;
            let (a, b): (Vec<u16>, Vec<u16>) =
                (s.encode_utf16().collect(), o.encode_utf16().collect());
            let diff = a
                .iter()
                .zip(&b)
                .find(|(x, y)| x != y)
                .map_or(a.len() as i64 - b.len() as i64, |(x, y)| {
                    i64::from(*x) - i64::from(*y)
                });
            Value::Int(diff)
        }
        ("concat", [o]) => ev.make_string(format!("{s}{}", text(o)?))?,
        ("replace", [a, b]) => ev.make_string(s.replace(&*text(a)?, &text(b)?))?,
        ("replaceAll", [a, b]) => {
            ev.make_string(java::replace_regex(s, &text(a)?, &text(b)?, true)?)?
        }
        ("replaceFirst", [a, b]) => {
            ev.make_string(java::replace_regex(s, &text(a)?, &text(b)?, false)?)?
        }
        ("matches", [p]) => Value::Bool(java::matches(s, &text(p)?)?),
        ("split", [p]) | ("split", [p, _]) => {
            let limit = match args.get(1) {
                Some(l) => int(l, name)?,
                None => 0,
            };
            let parts = java::split(s, &text(p)?, limit)?;
            ev.new_list(parts.into_iter().map(Value::string).collect())
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

fn number_method(n: &Value, name: &str, args: &[Value]) -> Call {
    Ok(Some(match (name, args) {
        ("toString", []) => Value::string(n.to_java_string()?),
        ("intValue" | "longValue" | "shortValue", []) => match n {
            Value::Float(f) => Value::Int(*f as i64),
            Value::Exact(_) => Value::Int(n.as_f64().unwrap_or(0.0) as i64),
            other => other.clone(),
        },
        ("doubleValue" | "floatValue", []) => Value::Float(n.as_f64().unwrap_or(0.0)),
        ("equals", [o]) => Value::Bool(match (n, o) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Exact(a), Value::Exact(b)) => a == b,
            _ => false,
        }),
        ("compareTo", [o]) => match (n.as_f64(), o.as_f64()) {
            (Some(a), Some(b)) => Value::Int(a.partial_cmp(&b).map_or(0, |o| o as i64)),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    }))
}

/// Items of a list-like value (a native list or a JSON array view).
fn list_items(v: &Value) -> Vec<Value> {
    match v {
        Value::List(l) => l.borrow().clone(),
        Value::Json(r) => {
            let len = r.with(|n| n.and_then(Json::as_array).map_or(0, Vec::len));
            (0..len).map(|i| r.child_index(i)).collect()
        }
        _ => Vec::new(),
    }
}

fn list_len(v: &Value) -> usize {
    match v {
        Value::List(l) => l.borrow().len(),
        Value::Json(r) => r.with(|n| n.and_then(Json::as_array).map_or(0, Vec::len)),
        _ => 0,
    }
}

fn list_get(v: &Value, i: usize) -> Value {
    match v {
        Value::List(l) => l.borrow().get(i).cloned().unwrap_or(Value::Null),
        Value::Json(r) => r.child_index(i),
        _ => Value::Null,
    }
}

/// Applies a mutation to a list-like value. JSON arrays take JSON; native lists take values.
fn list_mutate<R>(
    v: &Value,
    item: Option<&Value>,
    native: impl FnOnce(&mut Vec<Value>, Option<Value>) -> R,
    json: impl FnOnce(&mut Vec<Json>, Option<Json>) -> R,
) -> Result<Option<R>, Error> {
    match v {
        Value::List(l) => {
            let item = item.cloned();
            Ok(Some(native(&mut l.borrow_mut(), item)))
        }
        Value::Json(r) => {
            let item = item.map(Value::to_json).transpose()?;
            Ok(r.with_mut(|n| n.and_then(Json::as_array_mut).map(|a| json(a, item))))
        }
        _ => Ok(None),
    }
}

fn list_method(ev: &mut Eval<'_>, recv: &Value, name: &str, args: &[Value]) -> Call {
    let v = match (name, args) {
        ("size", []) => Value::Int(list_len(recv) as i64),
        ("isEmpty", []) => Value::Bool(list_len(recv) == 0),
        ("toString", []) => Value::string(recv.to_java_string()?),
        ("equals", [o]) => Value::Bool(values_equal(recv, o)?),
        ("get", [i]) => {
            let i = int(i, name)?;
            let len = list_len(recv);
            if i < 0 || i as usize >= len {
                return Err(out_of_range(name, i, len));
            }
            list_get(recv, i as usize)
        }
        ("contains", [o]) => {
            let mut found = false;
            for item in list_items(recv) {
                if values_equal(&item, o)? {
                    found = true;
                    break;
                }
            }
            Value::Bool(found)
        }
        ("indexOf", [o]) => {
            let mut at = -1;
            for (i, item) in list_items(recv).iter().enumerate() {
                if values_equal(item, o)? {
                    at = i as i64;
                    break;
                }
            }
            Value::Int(at)
        }
        ("add", [item]) => {
            list_mutate(recv, Some(item), |l, v| l.extend(v), |a, v| a.extend(v))?;
            Value::Bool(true)
        }
        ("add", [i, item]) => {
            let i = int(i, name)?;
            let len = list_len(recv);
            if i < 0 || i as usize > len {
                return Err(out_of_range(name, i, len));
            }
            let i = i as usize;
            list_mutate(
                recv,
                Some(item),
                |l, v| l.insert(i, v.unwrap_or(Value::Null)),
                |a, v| a.insert(i, v.unwrap_or(Json::Null)),
            )?;
            return Ok(Some(Value::Null));
        }
        ("set", [i, item]) => {
            let i = int(i, name)?;
            let len = list_len(recv);
            if i < 0 || i as usize >= len {
                return Err(out_of_range(name, i, len));
            }
            let old = list_get(recv, i as usize);
            let i = i as usize;
            list_mutate(
                recv,
                Some(item),
                |l, v| l[i] = v.unwrap_or(Value::Null),
                |a, v| a[i] = v.unwrap_or(Json::Null),
            )?;
            old
        }
        ("remove", [Value::Int(i)]) => {
            let len = list_len(recv);
            if *i < 0 || *i as usize >= len {
                return Err(out_of_range(name, *i, len));
            }
            let old = list_get(recv, *i as usize);
            let i = *i as usize;
            list_mutate(
                recv,
                None,
                |l, _| l.remove(i),
                |a, _| Value::from_json(a.remove(i)),
            )?;
            old
        }
        ("remove", [o]) => {
            let mut at = None;
            for (i, item) in list_items(recv).iter().enumerate() {
                if values_equal(item, o)? {
                    at = Some(i);
                    break;
                }
            }
            if let Some(i) = at {
                list_mutate(
                    recv,
                    None,
                    |l, _| drop(l.remove(i)),
                    |a, _| drop(a.remove(i)),
                )?;
            }
            Value::Bool(at.is_some())
        }
        ("addAll", [other]) => {
            let items = match other {
                Value::List(_) | Value::Json(_) => list_items(other),
                _ => return Ok(None),
            };
            let changed = !items.is_empty();
            for item in items {
                list_mutate(recv, Some(&item), |l, v| l.extend(v), |a, v| a.extend(v))?;
            }
            Value::Bool(changed)
        }
        ("clear", []) => {
            list_mutate(recv, None, |l, _| l.clear(), |a, _| a.clear())?;
            Value::Null
        }
        ("subList", [a, b]) => {
            let (a, b) = (int(a, name)?, int(b, name)?);
            let items = list_items(recv);
            if a < 0 || b as usize > items.len() || a > b {
                return Err(runtime(format!(
                    "subList({a}, {b}) out of range for size {}",
                    items.len()
                )));
            }
            ev.new_list(items[a as usize..b as usize].to_vec())
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Keys and values of a map-like value (a native map or a JSON object view).
fn map_entries(v: &Value) -> Vec<(Rc<str>, Value)> {
    match v {
        Value::Map(m) => m
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Value::Json(r) => {
            let keys: Vec<Rc<str>> = r.with(|n| {
                n.and_then(Json::as_object)
                    .map(|m| m.keys().map(|k| Rc::from(k.as_str())).collect())
                    .unwrap_or_default()
            });
            keys.into_iter()
                .map(|k| {
                    let v = r.child_key(&k);
                    (k, v)
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

pub(crate) fn map_get(v: &Value, key: &str) -> Value {
    match v {
        Value::Map(m) => m.borrow().get(key).cloned().unwrap_or(Value::Null),
        Value::Json(r) => r.child_key(key),
        _ => Value::Null,
    }
}

/// `put`: returns the previous value.
pub(crate) fn map_put(v: &Value, key: Rc<str>, item: Value) -> Result<Value, Error> {
    Ok(match v {
        Value::Map(m) => m.borrow_mut().insert(key, item).unwrap_or(Value::Null),
        Value::Json(r) => json_put(r, &key, &item)?,
        _ => Value::Null,
    })
}

fn json_put(r: &JsonRef, key: &str, item: &Value) -> Result<Value, Error> {
    let json = item.to_json()?;
    Ok(r.with_mut(|n| {
        n.and_then(Json::as_object_mut)
            .and_then(|m| m.insert(key.to_string(), json))
            .map_or(Value::Null, Value::from_json)
    }))
}

fn map_len(v: &Value) -> usize {
    match v {
        Value::Map(m) => m.borrow().len(),
        Value::Json(r) => r.with(|n| n.and_then(Json::as_object).map_or(0, serde_json::Map::len)),
        _ => 0,
    }
}

fn map_contains_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Map(m) => m.borrow().contains_key(key),
        Value::Json(r) => r.with(|n| {
            n.and_then(Json::as_object)
                .is_some_and(|m| m.contains_key(key))
        }),
        _ => false,
    }
}

fn map_method(ev: &mut Eval<'_>, recv: &Value, name: &str, args: &[Value]) -> Call {
    let v = match (name, args) {
        ("get", [k]) => map_get(recv, &text(k)?),
        ("getOrDefault", [k, d]) => {
            let k = text(k)?;
            if map_contains_key(recv, &k) {
                map_get(recv, &k)
            } else {
                d.clone()
            }
        }
        ("put", [k, v]) => map_put(recv, text(k)?, v.clone())?,
        ("putAll", [other]) => {
            for (k, v) in map_entries(other) {
                map_put(recv, k, v)?;
            }
            Value::Null
        }
        ("remove", [k]) => {
            let k = text(k)?;
            match recv {
                Value::Map(m) => m.borrow_mut().shift_remove(&*k).unwrap_or(Value::Null),
                Value::Json(r) => r.with_mut(|n| {
                    n.and_then(Json::as_object_mut)
                        .and_then(|m| m.shift_remove(&*k))
                        .map_or(Value::Null, Value::from_json)
                }),
                _ => Value::Null,
            }
        }
        ("containsKey", [k]) => Value::Bool(map_contains_key(recv, &text(k)?)),
        ("containsValue", [o]) => {
            let mut found = false;
            for (_, v) in map_entries(recv) {
                if values_equal(&v, o)? {
                    found = true;
                    break;
                }
            }
            Value::Bool(found)
        }
        ("keySet", []) => {
            let keys = map_entries(recv)
                .into_iter()
                .map(|(k, _)| Value::Str(k))
                .collect();
            ev.new_list(keys)
        }
        ("values", []) => {
            let values = map_entries(recv).into_iter().map(|(_, v)| v).collect();
            ev.new_list(values)
        }
        ("entrySet", []) => {
            let entries = map_entries(recv)
                .into_iter()
                .map(|e| Value::Entry(Rc::new(e)))
                .collect();
            ev.new_list(entries)
        }
        ("size", []) => Value::Int(map_len(recv) as i64),
        ("isEmpty", []) => Value::Bool(map_len(recv) == 0),
        ("clear", []) => {
            match recv {
                Value::Map(m) => m.borrow_mut().clear(),
                Value::Json(r) => r.with_mut(|n| {
                    if let Some(m) = n.and_then(Json::as_object_mut) {
                        m.clear();
                    }
                }),
                _ => {}
            }
            Value::Null
        }
        ("toString", []) => Value::string(recv.to_java_string()?),
        ("equals", [o]) => Value::Bool(values_equal(recv, o)?),
        _ => return Ok(None),
    };
    Ok(Some(v))
}
