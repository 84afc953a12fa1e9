//! Template errors: what went wrong, and where.
//!
//! Every error carries the template name and the byte span of the offending construct, so it
//! can be shown as `file:line:col: message` with the source line and a caret under it. The
//! payload is boxed so that `Result<T, Error>` stays one pointer wide on the hot path.

use std::fmt;
use std::sync::Arc;

use super::ast::Span;

/// What kind of failure this is. Callers use it to choose a response; the detail is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The template text is not valid VTL.
    Syntax,
    /// A `#foreach` ran past the iteration limit (1,000 on API Gateway).
    LoopLimit,
    /// The template used up its evaluation budget (steps).
    FuelExhausted,
    /// The rendered output, or a string built while rendering, grew past the size limit.
    OutputLimit,
    /// Nesting (blocks, expressions, `#define` expansion or values) went past the depth limit.
    DepthLimit,
    /// A method failed the way the Java method would throw (bad index, bad regex, ...).
    Runtime,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "syntax error",
            ErrorKind::LoopLimit => "loop limit exceeded",
            ErrorKind::FuelExhausted => "evaluation budget exhausted",
            ErrorKind::OutputLimit => "output limit exceeded",
            ErrorKind::DepthLimit => "nesting too deep",
            ErrorKind::Runtime => "template evaluation failed",
        }
    }
}

/// A template error with its location.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    detail: String,
    name: Option<Arc<str>>,
    source: Option<Arc<str>>,
    span: Option<Span>,
}

impl Error {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                detail: detail.into(),
                name: None,
                source: None,
                span: None,
            }),
        }
    }

    pub(crate) fn at(mut self, span: Span) -> Error {
        if self.inner.span.is_none() {
            self.inner.span = Some(span);
        }
        self
    }

    pub(crate) fn in_template(mut self, name: &Arc<str>, source: &Arc<str>) -> Error {
        if self.inner.name.is_none() {
            self.inner.name = Some(name.clone());
            self.inner.source = Some(source.clone());
        }
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    pub fn detail(&self) -> &str {
        &self.inner.detail
    }

    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// 1-based line and column (in characters) of the error, when it has a location.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let (source, span) = (self.inner.source.as_deref()?, self.inner.span?);
        let start = floor_char_boundary(source, span.start as usize);
        let before = &source[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = source[line_start..start].chars().count() + 1;
        Some((line, col))
    }

    /// The source line holding the error, without its newline.
    pub fn source_line(&self) -> Option<&str> {
        let (source, span) = (self.inner.source.as_deref()?, self.inner.span?);
        let start = floor_char_boundary(source, span.start as usize);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        Some(source[line_start..line_end].trim_end_matches('\r'))
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Error {
    /// `name:line:col: kind: detail`; the alternate form (`{:#}`) adds the source line and a
    /// caret under the column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name().unwrap_or("<template>");
        match self.line_col() {
            Some((line, col)) => write!(f, "{name}:{line}:{col}: ")?,
            None => write!(f, "{name}: ")?,
        }
        write!(f, "{}: {}", self.inner.kind.describe(), self.inner.detail)?;
        if f.alternate()
            && let (Some(line), Some((_, col))) = (self.source_line(), self.line_col())
        {
            let (excerpt, caret) = excerpt(line, col - 1);
            let pad: String = excerpt
                .chars()
                .take(caret)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n  {excerpt}\n  {pad}^")?;
        }
        Ok(())
    }
}

/// Characters of context shown on each side of the caret on a long line.
const EXCERPT_CONTEXT: usize = 60;

/// The part of `line` around character `col`, and the caret's position in that part.
fn excerpt(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= 2 * EXCERPT_CONTEXT {
        return (line.to_string(), col);
    }
    let start = col.saturating_sub(EXCERPT_CONTEXT);
    let end = (col + EXCERPT_CONTEXT).min(chars.len());
    let mut out = String::new();
    let mut caret = col - start;
    if start > 0 {
        out.push_str("...");
        caret += 3;
    }
    out.extend(&chars[start..end]);
    if end < chars.len() {
        out.push_str("...");
    }
    (out, caret)
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:#}")
    }
}

impl std::error::Error for Error {}
