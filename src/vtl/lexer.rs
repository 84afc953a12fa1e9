//! Lexing. Velocity is modal: template text is scanned character by character by the parser
//! (references and directives can start anywhere), while the inside of a directive's
//! parentheses or a method's arguments is an ordinary expression language. This module holds
//! the cursor both modes share and the tokenizer for the expression mode.

use super::ast::Span;
use super::error::{Error, ErrorKind};

/// A position in the template source.
#[derive(Clone)]
pub(crate) struct Cursor<'s> {
    src: &'s str,
    pos: usize,
    /// Offset of `src` inside the whole template (string literals are parsed as sub-templates).
    base: usize,
}

impl<'s> Cursor<'s> {
    pub(crate) fn new(src: &'s str, base: usize) -> Cursor<'s> {
        Cursor { src, pos: 0, base }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos;
    }

    pub(crate) fn src(&self) -> &'s str {
        self.src
    }

    pub(crate) fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    pub(crate) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(crate) fn peek_byte(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn peek_byte_at(&self, n: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + n).copied()
    }

    pub(crate) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(crate) fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub(crate) fn starts_with(&self, s: &str) -> bool {
        self.rest().starts_with(s)
    }

    /// Skips spaces and tabs (not newlines).
    pub(crate) fn skip_blanks(&mut self) {
        while matches!(self.peek_byte(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Skips all whitespace, newlines included.
    pub(crate) fn skip_ws(&mut self) {
        while matches!(self.peek_byte(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// A span from `start` (a position of this cursor) to the current position, in whole-
    /// template coordinates.
    pub(crate) fn span_from(&self, start: usize) -> Span {
        Span::new(self.base + start, self.base + self.pos.max(start))
    }

    pub(crate) fn span_at(&self, pos: usize) -> Span {
        Span::new(self.base + pos, self.base + pos + 1)
    }

    pub(crate) fn base(&self) -> usize {
        self.base
    }

    pub(crate) fn error(&self, pos: usize, detail: impl Into<String>) -> Error {
        Error::new(ErrorKind::Syntax, detail).at(self.span_at(pos))
    }

    /// Reads a Velocity identifier: `[A-Za-z_][A-Za-z0-9_-]*` (hyphens allowed, as in 1.7).
    pub(crate) fn ident(&mut self) -> Option<&'s str> {
        let start = self.pos;
        match self.peek_byte() {
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => self.pos += 1,
            _ => return None,
        }
        while matches!(self.peek_byte(), Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.pos += 1;
        }
        Some(&self.src[start..self.pos])
    }

    /// Reads a directive name: `[A-Za-z][A-Za-z0-9_]*`.
    pub(crate) fn directive_name(&mut self) -> Option<&'s str> {
        let start = self.pos;
        match self.peek_byte() {
            Some(b) if b.is_ascii_alphabetic() => self.pos += 1,
            _ => return None,
        }
        while matches!(self.peek_byte(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
            self.pos += 1;
        }
        Some(&self.src[start..self.pos])
    }
}

/// A token of the expression language.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    Int(i64),
    Float(f64),
    /// A single-quoted literal, unescaped (`''` -> `'`).
    SingleQuoted(String),
    /// A double-quoted literal: its content unescaped (`""` -> `"`) and the source offset
    /// of the content, for sub-parsing.
    DoubleQuoted(String, usize),
    Word(&'s str),
    /// The start of a reference; the `$` is not consumed.
    Dollar,
    Punct(&'static str),
    Eof,
}

const PUNCTS: [&str; 24] = [
    "==", "!=", "<=", ">=", "&&", "||", "..", "<", ">", "!", "+", "-", "*", "/", "%", "=", "(",
    ")", "[", "]", "{", "}", ",", ":",
];

/// Reads the next expression token after skipping whitespace. Returns the token and the
/// position where it starts.
pub(crate) fn next_token<'s>(cur: &mut Cursor<'s>) -> Result<(Tok<'s>, usize), Error> {
    cur.skip_ws();
    let start = cur.pos();
    let Some(b) = cur.peek_byte() else {
        return Ok((Tok::Eof, start));
    };
    let tok = match b {
        b'$' => Tok::Dollar,
        b'\'' => {
            cur.bump();
            Tok::SingleQuoted(quoted(cur, '\'', start)?)
        }
        b'"' => {
            cur.bump();
            let content_start = cur.base() + cur.pos();
            Tok::DoubleQuoted(quoted(cur, '"', start)?, content_start)
        }
        b'0'..=b'9' => number(cur, start)?,
        b'.' if matches!(cur.peek_byte_at(1), Some(b'0'..=b'9')) => number(cur, start)?,
        b if b.is_ascii_alphabetic() || b == b'_' => {
            let w = cur.directive_name().unwrap_or("");
            Tok::Word(w)
        }
        _ => {
            let Some(p) = PUNCTS.iter().find(|p| cur.starts_with(p)) else {
                let c = cur.peek().unwrap_or('?');
                return Err(cur.error(start, format!("unexpected character '{c}'")));
            };
            cur.eat(p);
            Tok::Punct(p)
        }
    };
    Ok((tok, start))
}

/// Reads a quoted literal's content up to the closing quote; a doubled quote stands for one.
/// Velocity 1.7 as API Gateway runs it has no backslash escapes in string literals.
fn quoted(cur: &mut Cursor<'_>, q: char, start: usize) -> Result<String, Error> {
    let mut out = String::new();
    loop {
        match cur.bump() {
            None => return Err(cur.error(start, "unterminated string literal")),
            Some(c) if c == q => {
                if cur.peek() == Some(q) {
                    cur.bump();
                    out.push(q);
                } else {
                    return Ok(out);
                }
            }
            Some(c) => out.push(c),
        }
    }
}

fn number<'s>(cur: &mut Cursor<'s>, start: usize) -> Result<Tok<'s>, Error> {
    let digits = |cur: &mut Cursor<'s>| {
        while matches!(cur.peek_byte(), Some(b'0'..=b'9')) {
            cur.bump();
        }
    };
    digits(cur);
    let mut float = false;
    if cur.peek_byte() == Some(b'.') && matches!(cur.peek_byte_at(1), Some(b'0'..=b'9')) {
        float = true;
        cur.bump();
        digits(cur);
    }
    if matches!(cur.peek_byte(), Some(b'e' | b'E')) {
        let save = cur.pos();
        cur.bump();
        if matches!(cur.peek_byte(), Some(b'+' | b'-')) {
            cur.bump();
        }
        if matches!(cur.peek_byte(), Some(b'0'..=b'9')) {
            float = true;
            digits(cur);
        } else {
            cur.set_pos(save);
        }
    }
    let text = &cur.src()[start..cur.pos()];
    if float {
        text.parse::<f64>()
            .map(Tok::Float)
            .map_err(|_| cur.error(start, format!("invalid number '{text}'")))
    } else {
        text.parse::<i64>()
            .map(Tok::Int)
            .map_err(|_| cur.error(start, format!("integer literal '{text}' is out of range")))
    }
}
