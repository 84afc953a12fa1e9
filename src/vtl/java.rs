//! `java.lang.String` and `java.util.regex` behaviour that templates observe.
//!
//! Indexes (`length`, `substring`, `indexOf`, `charAt`) count UTF-16 code units, as Java does;
//! ASCII strings take a byte-indexed fast path. Regular expressions run on the `regex` crate,
//! which guarantees linear-time matching even for patterns built from request data; Java
//! features it lacks (backreferences, lookaround) are reported as a template error. Compiled
//! patterns are kept in a small per-thread cache so that `replaceAll` in a loop compiles once.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::{Captures, Regex, RegexBuilder};

use super::error::{Error, ErrorKind};

fn runtime(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Runtime, detail)
}

/// A string seen as Java sees it: a sequence of UTF-16 code units.
pub(crate) enum Utf16<'a> {
    Ascii(&'a str),
    Wide(Vec<u16>),
}

impl<'a> Utf16<'a> {
    pub(crate) fn new(s: &'a str) -> Utf16<'a> {
        if s.is_ascii() {
            Utf16::Ascii(s)
        } else {
            Utf16::Wide(s.encode_utf16().collect())
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Utf16::Ascii(s) => s.len(),
            Utf16::Wide(w) => w.len(),
        }
    }

    pub(crate) fn slice(&self, start: usize, end: usize) -> String {
        match self {
            Utf16::Ascii(s) => s[start..end].to_string(),
            Utf16::Wide(w) => String::from_utf16_lossy(&w[start..end]),
        }
    }

    /// `indexOf(needle, from)`, in code units.
    pub(crate) fn index_of(&self, needle: &str, from: usize) -> Option<usize> {
        match self {
            Utf16::Ascii(s) if needle.is_ascii() => {
                let from = from.min(s.len());
                s[from..].find(needle).map(|i| i + from)
            }
            _ => {
                let hay = self.units();
                let needle: Vec<u16> = needle.encode_utf16().collect();
                let from = from.min(hay.len());
                if needle.is_empty() {
                    return Some(from);
                }
                hay.get(from..)?
                    .windows(needle.len())
                    .position(|w| w == needle.as_slice())
                    .map(|i| i + from)
            }
        }
    }

    pub(crate) fn last_index_of(&self, needle: &str) -> Option<usize> {
        let hay = self.units();
        let needle: Vec<u16> = needle.encode_utf16().collect();
        if needle.is_empty() {
            return Some(hay.len());
        }
        hay.windows(needle.len())
            .rposition(|w| w == needle.as_slice())
    }

    fn units(&self) -> Vec<u16> {
        match self {
            Utf16::Ascii(s) => s.bytes().map(u16::from).collect(),
            Utf16::Wide(w) => w.clone(),
        }
    }
}

/// Java's `String.trim()`: strips every char <= U+0020 at both ends.
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// Java's `String.hashCode()`.
pub(crate) fn hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Anchor {
    Find,
    Whole,
}

const REGEX_CACHE_SIZE: usize = 128;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<(Box<str>, Anchor), Regex>> = RefCell::new(HashMap::new());
}

fn compile(pattern: &str, anchor: Anchor) -> Result<Regex, Error> {
    let key = (Box::from(pattern), anchor);
    if let Some(re) = REGEX_CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(re);
    }
    let source = match anchor {
        Anchor::Find => pattern.to_string(),
        Anchor::Whole => format!(r"\A(?:{pattern})\z"),
    };
    let re = RegexBuilder::new(&source)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            runtime(format!(
                "invalid regular expression {pattern:?}: {}",
                first_line(&e)
            ))
        })?;
    REGEX_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= REGEX_CACHE_SIZE {
            c.clear();
        }
        c.insert(key, re.clone());
    });
    Ok(re)
}

fn first_line(e: &regex::Error) -> String {
    let s = e.to_string();
    s.lines().last().unwrap_or("").trim().to_string()
}

/// `String.matches(regex)`: the whole string must match.
pub(crate) fn matches(s: &str, pattern: &str) -> Result<bool, Error> {
    Ok(compile(pattern, Anchor::Whole)?.is_match(s))
}

/// `String.replaceAll` / `replaceFirst` with Java's replacement syntax (`$1`, `${name}`,
/// `\$` for a literal dollar).
pub(crate) fn replace_regex(
    s: &str,
    pattern: &str,
    replacement: &str,
    all: bool,
) -> Result<String, Error> {
    let re = compile(pattern, Anchor::Find)?;
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let m = caps.get(0).expect("group 0 always matches");
        out.push_str(&s[last..m.start()]);
        expand_replacement(&caps, replacement, &re, &mut out)?;
        last = m.end();
        if !all {
            break;
        }
    }
    out.push_str(&s[last..]);
    Ok(out)
}

fn expand_replacement(
    caps: &Captures<'_>,
    repl: &str,
    re: &Regex,
    out: &mut String,
) -> Result<(), Error> {
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => return Err(runtime("character to be escaped is missing in replacement")),
            },
            '$' => {
                if chars.peek() == Some(&'{') {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    match caps.name(&name) {
                        Some(m) => out.push_str(m.as_str()),
                        None if re.capture_names().any(|n| n == Some(&name)) => {}
                        None => return Err(runtime(format!("no group with name {{{name}}}"))),
                    }
                    continue;
                }
                let Some(first) = chars.peek().and_then(|c| c.to_digit(10)) else {
                    return Err(runtime("illegal group reference in replacement"));
                };
                chars.next();
                let mut group = first as usize;
                if group >= caps.len() {
                    return Err(runtime(format!("no group {group}")));
                }
                // Java takes further digits while they still name an existing group.
                while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                    let next = group * 10 + d as usize;
                    if next >= caps.len() {
                        break;
                    }
                    group = next;
                    chars.next();
                }
                if let Some(m) = caps.get(group) {
                    out.push_str(m.as_str());
                }
            }
            c => out.push(c),
        }
    }
    Ok(())
}

/// `String.split(regex, limit)` with Java's rules: a zero-width match at the start makes no
/// leading empty string, and with `limit == 0` trailing empty strings are dropped.
pub(crate) fn split(s: &str, pattern: &str, limit: i64) -> Result<Vec<String>, Error> {
    if s.is_empty() {
        return Ok(vec![String::new()]);
    }
    let re = compile(pattern, Anchor::Find)?;
    let mut parts: Vec<String> = Vec::new();
    let mut last = 0;
    let mut matched = false;
    for m in re.find_iter(s) {
        if m.end() == 0 {
            continue;
        }
        if m.start() == m.end() && m.start() >= s.len() {
            break;
        }
        if limit > 0 && parts.len() as i64 >= limit - 1 {
            break;
        }
        matched = true;
        parts.push(s[last..m.start()].to_string());
        last = m.end();
    }
    if !matched {
        return Ok(vec![s.to_string()]);
    }
    parts.push(s[last..].to_string());
    if limit == 0 {
        while parts.len() > 1 && parts.last().is_some_and(String::is_empty) {
            parts.pop();
        }
        if parts.len() == 1 && parts[0].is_empty() {
            parts.clear();
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_java() {
        assert_eq!(split("a,b,,c,,", ",", 0).unwrap(), ["a", "b", "", "c"]);
        assert_eq!(split("a,b,c", ",", 2).unwrap(), ["a", "b,c"]);
        assert_eq!(split("abc", "", 0).unwrap(), ["a", "b", "c"]);
        assert_eq!(split("", ",", 0).unwrap(), [""]);
        assert_eq!(split(",,", ",", 0).unwrap(), Vec::<String>::new());
        assert_eq!(split("no-sep", ",", 0).unwrap(), ["no-sep"]);
        assert_eq!(split(",a", ",", 0).unwrap(), ["", "a"]);
        assert_eq!(split("a.b", "\\.", 0).unwrap(), ["a", "b"]);
    }

    #[test]
    fn replacement_syntax_is_java() {
        assert_eq!(
            replace_regex("ab12", "([a-z]+)(\\d+)", "$2-$1", true).unwrap(),
            "12-ab"
        );
        assert_eq!(replace_regex("a.b", "\\.", "\\$", true).unwrap(), "a$b");
        assert_eq!(replace_regex("it\\'s", "\\\\'", "'", true).unwrap(), "it's");
        assert!(replace_regex("x", "x", "$", true).is_err());
        assert!(replace_regex("x", "x", "$2", true).is_err());
        assert_eq!(replace_regex("aaa", "a", "b", false).unwrap(), "baa");
    }

    #[test]
    fn utf16_indexes() {
        let s = Utf16::new("h\u{e9}llo\u{1F600}!");
        assert_eq!(s.len(), 8);
        assert_eq!(s.index_of("l", 0), Some(2));
        assert_eq!(s.slice(1, 3), "\u{e9}l");
        assert_eq!(hash_code("hello"), 99162322);
    }

    #[test]
    fn matches_is_whole_string() {
        assert!(matches("123", "[0-9]*").unwrap());
        assert!(!matches("d123", "[0-9]*").unwrap());
        assert!(
            matches(
                "2020-01-20T08:00:00.000Z",
                r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00\.000Z$"
            )
            .unwrap()
        );
    }
}
