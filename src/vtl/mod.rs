//! A Velocity (VTL) interpreter with the dialect API Gateway runs: Velocity 1.7 syntax and
//! semantics, plus "a null reference renders as the empty string".
//!
//! The module is synchronous and self-contained (no tokio, axum or AWS), so that it could
//! become a crate of its own. Stages:
//!
//! ```text
//! source --lexer/parser--> ast (once, at load) --eval + Host--> String (per request)
//! ```
//!
//! - [`Template::compile`] parses once and reports errors as `name:line:col` with a caret.
//! - [`Template::render`] evaluates against a [`Host`], which supplies the globals
//!   (`$input`, `$util`, `$context`, ... live in `crate::mapping`), within [`Limits`].
//! - [`Value`] carries Java semantics: printing, equality, arithmetic, methods.

mod ast;
mod error;
mod eval;
mod java;
mod lexer;
mod methods;
mod parser;
mod value;

use std::sync::Arc;

pub use ast::Span;
pub use error::{Error, ErrorKind};
pub use eval::{Host, Limits, NoHost};
pub use value::{Doc, JsonRef, Seg, Value, new_context_doc, new_doc, write_java_double};

/// A compiled template: parse once, render many times (from any thread).
#[derive(Debug)]
pub struct Template {
    name: Arc<str>,
    source: Arc<str>,
    block: ast::Block,
    defines: Vec<ast::Block>,
    names: Vec<Box<str>>,
}

impl Template {
    /// Parses `source`. `name` (usually the file path) appears in error messages.
    pub fn compile(name: &str, source: &str) -> Result<Template, Error> {
        let name: Arc<str> = Arc::from(name);
        let src: Arc<str> = Arc::from(source);
        let parsed = parser::parse(source).map_err(|e| e.in_template(&name, &src))?;
        Ok(Template {
            name,
            source: src,
            block: parsed.block,
            defines: parsed.defines,
            names: parsed.names.into_iter().collect(),
        })
    }

    /// Renders the template. Errors carry the location of the construct that failed.
    pub fn render(&self, host: &dyn Host, limits: &Limits) -> Result<String, Error> {
        self.render_into(host, limits, String::new())
    }

    /// Renders, appending to `out` (pass a buffer with capacity to avoid regrowing it).
    pub fn render_into(
        &self,
        host: &dyn Host,
        limits: &Limits,
        out: String,
    ) -> Result<String, Error> {
        eval::render(self, host, limits, out).map_err(|e| e.in_template(&self.name, &self.source))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template mentions the variable `$name` anywhere (lets a host skip
    /// building `$context` for templates that never read it).
    pub fn mentions(&self, name: &str) -> bool {
        self.names.iter().any(|n| &**n == name)
    }
}
