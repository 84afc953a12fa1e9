//! Parsing template text into the AST.
//!
//! Velocity 1.7 rules as API Gateway applies them (see the README's template section):
//! - `$name`, `$!name`, `${name}`, `$!{name}` followed by `.prop`, `.method(args)` and
//!   `[index]`; identifiers may contain hyphens (`$elem.partition-key`).
//! - A `$` or `#` that does not start a reference or a known directive is literal text, so
//!   JSONPath strings, ARNs and DynamoDB `#names` pass through untouched.
//! - A directive's closing `)` (and `#else`, `#end`) swallows trailing blanks plus one newline;
//!   indentation before a directive is kept.
//! - `##` comments eat their newline; `#* *#` comments do not.
//! - `#macro` definitions are swallowed and calls of unknown directives, like `#evaluate(..)`,
//!   are emitted verbatim, as API Gateway does.
//!
//! Nesting depth is bounded so that hostile templates cannot overflow the stack.

use indexmap::IndexSet;

use super::ast::{BinOp, Block, DefineId, Expr, Node, Part, Reference, Span, VarId};
use super::error::{Error, ErrorKind};
use super::lexer::{Cursor, Tok, next_token};

/// Maximum nesting of blocks, parentheses, literals and string interpolation.
pub(crate) const MAX_PARSE_DEPTH: usize = 64;

/// Directive names that a backslash can escape.
const DIRECTIVES: [&str; 10] = [
    "set", "if", "elseif", "else", "end", "foreach", "define", "macro", "break", "stop",
];

pub(crate) struct Parsed {
    pub(crate) block: Block,
    pub(crate) names: IndexSet<Box<str>>,
    pub(crate) defines: Vec<Block>,
}

pub(crate) fn parse(src: &str) -> Result<Parsed, Error> {
    let mut tables = Tables::default();
    let mut parser = Parser {
        cur: Cursor::new(src, 0),
        tables: &mut tables,
        depth: 0,
        construct_end: 0,
    };
    let (block, term) = parser.block(Ctx::Top)?;
    debug_assert!(matches!(term, Term::Eof));
    Ok(Parsed {
        block,
        names: tables.names,
        defines: tables.defines,
    })
}

/// What the parser collects besides the tree: interned variable names and `#define` bodies.
#[derive(Default)]
struct Tables {
    names: IndexSet<Box<str>>,
    defines: Vec<Block>,
}

/// Where a block is being parsed, which decides the directives that may end it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    /// The body of `#if`/`#elseif`: ends at `#elseif`, `#else` or `#end`.
    IfBranch,
    /// The body of `#else`, `#foreach`, `#define`, `#macro`: ends at `#end`.
    Body,
}

enum Term {
    Eof,
    End,
    Else,
    ElseIf(Expr),
}

struct Parser<'s, 't> {
    cur: Cursor<'s>,
    tables: &'t mut Tables,
    depth: usize,
    /// Where the last directive or comment ended. Blanks between it and a `#set` belong to
    /// the `#set` token in Velocity 1.7's lexer and are dropped; blanks after literal text
    /// or a reference are kept (both recorded on API Gateway).
    construct_end: usize,
}

impl<'s> Parser<'s, '_> {
    fn intern(&mut self, name: &str) -> VarId {
        let (i, _) = self.tables.names.insert_full(name.into());
        VarId(i as u32)
    }

    fn enter(&mut self, pos: usize) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_PARSE_DEPTH {
            return Err(Error::new(
                ErrorKind::DepthLimit,
                format!("template nesting deeper than {MAX_PARSE_DEPTH} levels"),
            )
            .at(self.cur.span_at(pos)));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ----- template text -------------------------------------------------------------------

    fn block(&mut self, ctx: Ctx) -> Result<(Block, Term), Error> {
        self.construct_end = self.cur.pos();
        let mut nodes = Vec::new();
        let mut text = String::new();
        loop {
            let Some(b) = self.cur.peek_byte() else {
                flush(&mut text, &mut nodes);
                return Ok((nodes, Term::Eof));
            };
            match b {
                b'$' => {
                    if let Some(r) = self.reference(false)? {
                        flush(&mut text, &mut nodes);
                        nodes.push(Node::Ref(Box::new(r)));
                    } else {
                        self.cur.bump();
                        text.push('$');
                    }
                }
                b'\\' => self.escape(&mut text, &mut nodes)?,
                b'#' => {
                    if let Some(term) = self.hash(ctx, &mut text, &mut nodes)? {
                        flush(&mut text, &mut nodes);
                        return Ok((nodes, term));
                    }
                }
                _ => {
                    // Copy the run of plain text up to the next special character at once.
                    let rest = self.cur.rest();
                    let n = rest.find(['$', '\\', '#']).unwrap_or(rest.len()).max(1);
                    let n = if rest.is_char_boundary(n) {
                        n
                    } else {
                        rest.char_indices().nth(1).map_or(rest.len(), |(i, _)| i)
                    };
                    text.push_str(&rest[..n]);
                    self.cur.set_pos(self.cur.pos() + n);
                }
            }
        }
    }

    /// A run of backslashes. Before a reference or a directive, pairs of backslashes print
    /// one backslash each and an odd one out makes the reference or directive literal.
    fn escape(&mut self, text: &mut String, nodes: &mut Block) -> Result<(), Error> {
        let start = self.cur.pos();
        let n = self.cur.rest().bytes().take_while(|&b| b == b'\\').count();
        let after = start + n;
        self.cur.set_pos(after);
        match self.cur.peek_byte() {
            Some(b'$') => {
                if let Some(r) = self.reference(false)? {
                    text.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        // Escaped: its text, once evaluated (a null keeps a backslash).
                        flush(text, nodes);
                        nodes.push(Node::EscapedRef {
                            reference: Box::new(r),
                            literal: self.cur.src()[after..self.cur.pos()].into(),
                        });
                    } else {
                        flush(text, nodes);
                        nodes.push(Node::Ref(Box::new(r)));
                    }
                    return Ok(());
                }
            }
            Some(b'#') => {
                let mut probe = self.cur.clone();
                probe.bump();
                let braced = probe.eat("{");
                if let Some(name) = probe.directive_name()
                    && DIRECTIVES.contains(&name)
                    && (!braced || probe.eat("}"))
                {
                    text.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        text.push_str(&self.cur.src()[after..probe.pos()]);
                        self.cur.set_pos(probe.pos());
                    }
                    return Ok(());
                }
            }
            _ => {}
        }
        text.extend(std::iter::repeat_n('\\', n));
        Ok(())
    }

    /// Something starting with `#`: a comment, a directive, or literal text. Returns the
    /// terminator when the directive ends the current block.
    fn hash(
        &mut self,
        ctx: Ctx,
        text: &mut String,
        nodes: &mut Block,
    ) -> Result<Option<Term>, Error> {
        let start = self.cur.pos();
        if self.cur.eat("##") {
            let rest = self.cur.rest();
            let n = rest.find('\n').map_or(rest.len(), |i| i + 1);
            self.cur.set_pos(self.cur.pos() + n);
            self.construct_end = self.cur.pos();
            return Ok(None);
        }
        if self.cur.eat("#*") {
            let Some(i) = self.cur.rest().find("*#") else {
                return Err(self.cur.error(start, "unterminated #* comment *#"));
            };
            self.cur.set_pos(self.cur.pos() + i + 2);
            self.construct_end = self.cur.pos();
            return Ok(None);
        }
        if self.cur.eat("#[[") {
            let Some(i) = self.cur.rest().find("]]#") else {
                return Err(self.cur.error(start, "unterminated #[[ literal ]]#"));
            };
            text.push_str(&self.cur.rest()[..i]);
            self.cur.set_pos(self.cur.pos() + i + 3);
            return Ok(None);
        }
        self.cur.bump();
        let braced = self.cur.eat("{");
        let name = match self.cur.directive_name() {
            Some(name) if !braced || self.cur.eat("}") => name,
            _ => {
                self.cur.set_pos(start + 1);
                text.push('#');
                return Ok(None);
            }
        };
        match name {
            "set" => {
                // Blanks right after another construct are part of the `#set` token.
                let blanks = self.cur.src()[..start]
                    .bytes()
                    .rev()
                    .take_while(|&b| b == b' ' || b == b'\t')
                    .count();
                if start - blanks == self.construct_end && blanks <= text.len() {
                    text.truncate(text.len() - blanks);
                }
                flush(text, nodes);
                let node = self.set_directive(start)?;
                nodes.push(node);
            }
            "if" => {
                flush(text, nodes);
                let node = self.if_directive(start)?;
                nodes.push(node);
            }
            "foreach" => {
                flush(text, nodes);
                let node = self.foreach_directive(start)?;
                nodes.push(node);
            }
            "define" => {
                flush(text, nodes);
                let node = self.define_directive(start)?;
                nodes.push(node);
            }
            "macro" => {
                flush(text, nodes);
                self.macro_directive(start)?;
            }
            "elseif" => {
                if ctx != Ctx::IfBranch {
                    return Err(self.unexpected(start, "#elseif"));
                }
                let cond = self.paren_expr(start, "#elseif")?;
                self.gobble_line_end();
                return Ok(Some(Term::ElseIf(cond)));
            }
            "else" => {
                if ctx != Ctx::IfBranch {
                    return Err(self.unexpected(start, "#else"));
                }
                self.gobble_line_end();
                return Ok(Some(Term::Else));
            }
            "end" => {
                if ctx == Ctx::Top {
                    return Err(self.unexpected(start, "#end"));
                }
                self.gobble_line_end();
                return Ok(Some(Term::End));
            }
            "break" => {
                flush(text, nodes);
                self.skip_call_args()?;
                nodes.push(Node::Break);
            }
            "stop" => {
                flush(text, nodes);
                nodes.push(Node::Stop);
            }
            _ => {
                // Not a directive API Gateway knows (`#evaluate`, `#include`, a macro call,
                // a DynamoDB `#name`): emitted verbatim, arguments included.
                let name_end = self.cur.pos();
                self.cur.skip_blanks();
                if self.cur.peek_byte() == Some(b'(') && self.skip_balanced().is_ok() {
                    text.push_str(&self.cur.src()[start..self.cur.pos()]);
                } else {
                    self.cur.set_pos(name_end);
                    text.push_str(&self.cur.src()[start..name_end]);
                }
                return Ok(None);
            }
        }
        self.construct_end = self.cur.pos();
        Ok(None)
    }

    fn unexpected(&self, pos: usize, what: &str) -> Error {
        self.cur.error(
            pos,
            format!("{what} without a matching #if/#foreach/#define"),
        )
    }

    /// After a directive: blanks followed by a newline are swallowed with the newline.
    fn gobble_line_end(&mut self) {
        let save = self.cur.pos();
        self.cur.skip_blanks();
        if !(self.cur.eat("\r\n") || self.cur.eat("\n") || self.cur.eat("\r")) {
            self.cur.set_pos(save);
        }
    }

    /// Skips `( ... )` with nested parentheses and quoted strings, if present.
    fn skip_call_args(&mut self) -> Result<(), Error> {
        let save = self.cur.pos();
        self.cur.skip_blanks();
        if self.cur.peek_byte() == Some(b'(') {
            self.skip_balanced()
        } else {
            self.cur.set_pos(save);
            Ok(())
        }
    }

    fn skip_balanced(&mut self) -> Result<(), Error> {
        let start = self.cur.pos();
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = self.cur.bump() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '(') => depth += 1,
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        self.cur.set_pos(start);
        Err(self.cur.error(start, "unbalanced parentheses"))
    }

    fn open_paren(&mut self, directive_start: usize, what: &str) -> Result<(), Error> {
        self.cur.skip_blanks();
        let pos = self.cur.pos();
        if !self.cur.eat("(") {
            return Err(self.cur.error(pos, format!("expected '(' after {what}")));
        }
        let _ = directive_start;
        Ok(())
    }

    fn close_paren(&mut self, what: &str) -> Result<(), Error> {
        self.cur.skip_ws();
        let pos = self.cur.pos();
        if !self.cur.eat(")") {
            return Err(self.cur.error(pos, format!("expected ')' to close {what}")));
        }
        Ok(())
    }

    fn paren_expr(&mut self, start: usize, what: &str) -> Result<Expr, Error> {
        self.open_paren(start, what)?;
        let e = self.expr()?;
        self.close_paren(what)?;
        Ok(e)
    }

    fn set_directive(&mut self, start: usize) -> Result<Node, Error> {
        self.open_paren(start, "#set")?;
        self.cur.skip_ws();
        let pos = self.cur.pos();
        let target = match self.reference(true)? {
            Some(r) => r,
            None => return Err(self.cur.error(pos, "expected a $reference to assign to")),
        };
        if matches!(target.parts.last(), Some(Part::Method(..))) {
            return Err(self.cur.error(pos, "cannot assign to a method call"));
        }
        self.cur.skip_ws();
        let eq = self.cur.pos();
        if !self.cur.eat("=") {
            return Err(self.cur.error(eq, "expected '=' in #set"));
        }
        let value = self.expr()?;
        self.close_paren("#set")?;
        let span = self.cur.span_from(start);
        self.gobble_line_end();
        Ok(Node::Set {
            target: Box::new(target),
            value,
            span,
        })
    }

    fn if_directive(&mut self, start: usize) -> Result<Node, Error> {
        let mut cond = self.paren_expr(start, "#if")?;
        self.gobble_line_end();
        self.enter(start)?;
        let mut branches = Vec::new();
        let otherwise = loop {
            let (body, term) = self.block(Ctx::IfBranch)?;
            branches.push((cond, body));
            match term {
                Term::ElseIf(next) => cond = next,
                Term::Else => {
                    let (body, term) = self.block(Ctx::Body)?;
                    if !matches!(term, Term::End) {
                        return Err(self.cur.error(start, "#if without a matching #end"));
                    }
                    break Some(body);
                }
                Term::End => break None,
                Term::Eof => return Err(self.cur.error(start, "#if without a matching #end")),
            }
        };
        self.leave();
        Ok(Node::If {
            branches,
            otherwise,
        })
    }

    fn body(&mut self, start: usize, what: &str) -> Result<Block, Error> {
        self.enter(start)?;
        let (body, term) = self.block(Ctx::Body)?;
        if !matches!(term, Term::End) {
            return Err(self
                .cur
                .error(start, format!("{what} without a matching #end")));
        }
        self.leave();
        Ok(body)
    }

    fn simple_var(&mut self, what: &str) -> Result<VarId, Error> {
        self.cur.skip_ws();
        let pos = self.cur.pos();
        let r = self.reference(true)?;
        match r {
            Some(r) if r.parts.is_empty() => Ok(r.root),
            _ => Err(self
                .cur
                .error(pos, format!("expected a simple $variable in {what}"))),
        }
    }

    fn foreach_directive(&mut self, start: usize) -> Result<Node, Error> {
        self.open_paren(start, "#foreach")?;
        let var = self.simple_var("#foreach")?;
        let (tok, pos) = next_token(&mut self.cur)?;
        if tok != Tok::Word("in") {
            return Err(self.cur.error(pos, "expected 'in' in #foreach"));
        }
        let iterable = self.parameter(Arg::Directive)?;
        self.close_paren("#foreach")?;
        let span = self.cur.span_from(start);
        self.gobble_line_end();
        let body = self.body(start, "#foreach")?;
        Ok(Node::Foreach {
            var,
            iterable,
            body,
            span,
        })
    }

    fn define_directive(&mut self, start: usize) -> Result<Node, Error> {
        self.open_paren(start, "#define")?;
        let var = self.simple_var("#define")?;
        self.close_paren("#define")?;
        self.gobble_line_end();
        let body = self.body(start, "#define")?;
        self.tables.defines.push(body);
        Ok(Node::Define {
            var,
            body: DefineId(self.tables.defines.len() as u32 - 1),
        })
    }

    /// `#macro(name args) .. #end`: API Gateway does not support macros; the definition is
    /// parsed (so its `#end` pairs up) and dropped.
    fn macro_directive(&mut self, start: usize) -> Result<(), Error> {
        self.cur.skip_blanks();
        if self.cur.peek_byte() != Some(b'(') {
            return Err(self.cur.error(self.cur.pos(), "expected '(' after #macro"));
        }
        self.skip_balanced()?;
        self.gobble_line_end();
        self.body(start, "#macro")?;
        Ok(())
    }

    // ----- references ------------------------------------------------------------------------

    /// Parses a reference at the cursor (which is on `$`). Returns `None`, with the cursor
    /// unmoved, when the `$` does not start a reference.
    fn reference(&mut self, in_expr: bool) -> Result<Option<Reference>, Error> {
        let start = self.cur.pos();
        if !self.cur.eat("$") {
            return Ok(None);
        }
        self.cur.eat("!");
        let formal = self.cur.eat("{");
        let Some(name) = self.cur.ident() else {
            // `${ x}`, `$!{}`: no reference, text (Velocity's `LCURLY` as `Text`).
            self.cur.set_pos(start);
            return Ok(None);
        };
        let root = self.intern(name);
        let mut parts = Vec::new();
        loop {
            let save = self.cur.pos();
            match self.cur.peek_byte() {
                Some(b'.') => {
                    self.cur.bump();
                    let Some(prop) = self.cur.ident() else {
                        self.cur.set_pos(save);
                        break;
                    };
                    if self.cur.peek_byte() == Some(b'(') {
                        let args = self.call_args()?;
                        parts.push(Part::Method(prop.into(), args, self.cur.span_from(save)));
                    } else {
                        parts.push(Part::Property(prop.into()));
                    }
                }
                Some(b'[') => {
                    // An index: `[` after a reference always opens one (Velocity's
                    // REFINDEX state), holding a string, an integer, a boolean or a reference.
                    self.cur.bump();
                    let e = self.parameter(Arg::Index)?;
                    self.cur.skip_ws();
                    if !self.cur.eat("]") {
                        return Err(self
                            .cur
                            .error(self.cur.pos(), "expected ']' to close the index"));
                    }
                    parts.push(Part::Index(e));
                }
                _ => break,
            }
        }
        if formal && !self.cur.eat("}") {
            return Err(self
                .cur
                .error(self.cur.pos(), "expected '}' to close '${' reference"));
        }
        let _ = in_expr;
        Ok(Some(Reference {
            root,
            parts,
            span: self.cur.span_from(start),
        }))
    }

    fn call_args(&mut self) -> Result<Vec<Expr>, Error> {
        let open = self.cur.pos();
        self.cur.bump();
        self.enter(open)?;
        let mut args = Vec::new();
        self.cur.skip_ws();
        if !self.cur.eat(")") {
            loop {
                args.push(self.parameter(Arg::Method)?);
                let (tok, pos) = next_token(&mut self.cur)?;
                match tok {
                    Tok::Punct(",") => continue,
                    Tok::Punct(")") => break,
                    _ => return Err(self.cur.error(pos, "expected ',' or ')' in arguments")),
                }
            }
        }
        self.leave();
        Ok(args)
    }

    // ----- expressions -----------------------------------------------------------------------

    fn peek(&mut self) -> Result<(Tok<'s>, usize), Error> {
        let save = self.cur.pos();
        let t = next_token(&mut self.cur);
        self.cur.set_pos(save);
        t
    }

    fn expr(&mut self) -> Result<Expr, Error> {
        let pos = self.cur.pos();
        self.enter(pos)?;
        let e = self.binary(0);
        self.leave();
        e
    }

    /// Precedence climbing over Velocity's operator levels:
    /// `||` < `&&` < `== !=` < `< <= > >=` < `+ -` < `* / %`.
    fn binary(&mut self, level: u8) -> Result<Expr, Error> {
        if level == 6 {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        loop {
            let (tok, pos) = self.peek()?;
            let op = match (level, &tok) {
                (0, Tok::Punct("||") | Tok::Word("or")) => BinOp::Or,
                (1, Tok::Punct("&&") | Tok::Word("and")) => BinOp::And,
                (2, Tok::Punct("==") | Tok::Word("eq")) => BinOp::Eq,
                (2, Tok::Punct("!=") | Tok::Word("ne")) => BinOp::Ne,
                (3, Tok::Punct("<") | Tok::Word("lt")) => BinOp::Lt,
                (3, Tok::Punct("<=") | Tok::Word("le")) => BinOp::Le,
                (3, Tok::Punct(">") | Tok::Word("gt")) => BinOp::Gt,
                (3, Tok::Punct(">=") | Tok::Word("ge")) => BinOp::Ge,
                (4, Tok::Punct("+")) => BinOp::Add,
                (4, Tok::Punct("-")) if self.minus_before_digit(pos) => {
                    return Err(self.cur.error(
                        pos,
                        "Velocity 1.7 reads '-' directly before digits as a negative number, not a subtraction: put a space after the '-'",
                    ));
                }
                (4, Tok::Punct("-")) => BinOp::Sub,
                (5, Tok::Punct("*")) => BinOp::Mul,
                (5, Tok::Punct("/")) => BinOp::Div,
                (5, Tok::Punct("%")) => BinOp::Rem,
                _ => return Ok(lhs),
            };
            next_token(&mut self.cur)?;
            let rhs = self.binary(level + 1)?;
            let span = Span::new(self.cur.base() + pos, self.cur.base() + self.cur.pos());
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs), span);
        }
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        let (tok, pos) = self.peek()?;
        match tok {
            Tok::Punct("!") | Tok::Word("not") => {
                next_token(&mut self.cur)?;
                self.enter(pos)?;
                let e = self.unary()?;
                self.leave();
                Ok(Expr::Not(Box::new(e)))
            }
            Tok::Punct("-") => match self.negative_literal()? {
                Some(e) => Ok(e),
                None => Err(self.cur.error(
                    pos,
                    "Velocity 1.7 has no unary minus ('-' makes a negative number only directly before its digits): write 0 - x",
                )),
            },
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let (tok, pos) = self.peek()?;
        if tok == Tok::Dollar {
            self.cur.skip_ws();
            return match self.reference(true)? {
                Some(r) => Ok(Expr::Ref(Box::new(r))),
                None => Err(self.cur.error(pos, "expected a reference after '$'")),
            };
        }
        next_token(&mut self.cur)?;
        Ok(match tok {
            Tok::Int(i) => Expr::Int(i),
            Tok::Float(f) => Expr::Float(f),
            Tok::SingleQuoted(s) => Expr::Str(s.into()),
            Tok::DoubleQuoted(s, offset) => self.interpolated(&s, offset)?,
            Tok::Word("true") => Expr::Bool(true),
            Tok::Word("false") => Expr::Bool(false),
            // Not in Velocity 1.7's grammar, but API Gateway takes it (recorded: `put_null`).
            Tok::Word("null") => Expr::Null,
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.close_paren("parenthesis")?;
                e
            }
            Tok::Punct("[") => self.list_or_range(pos)?,
            Tok::Punct("{") => self.map_literal(pos)?,
            Tok::Eof => return Err(self.cur.error(pos, "unexpected end of template")),
            Tok::Word(w) => return Err(self.cur.error(pos, format!("unexpected word '{w}'"))),
            Tok::Punct(p) => return Err(self.cur.error(pos, format!("unexpected '{p}'"))),
            Tok::Dollar => unreachable!("handled above"),
        })
    }

    /// Whether the `-` at `pos` stands directly before a digit (Velocity's lexer then reads
    /// a negative number: `INTEGER_LITERAL` is `("-")? DIGIT+`).
    fn minus_before_digit(&self, pos: usize) -> bool {
        self.cur
            .src()
            .as_bytes()
            .get(pos + 1)
            .is_some_and(u8::is_ascii_digit)
            || (self.cur.src().as_bytes().get(pos + 1) == Some(&b'.')
                && self
                    .cur
                    .src()
                    .as_bytes()
                    .get(pos + 2)
                    .is_some_and(u8::is_ascii_digit))
    }

    /// A negative number literal at the cursor (`-` directly before its digits), or `None`
    /// with the cursor unmoved.
    fn negative_literal(&mut self) -> Result<Option<Expr>, Error> {
        let save = self.cur.pos();
        let (tok, pos) = next_token(&mut self.cur)?;
        if tok != Tok::Punct("-") || !self.minus_before_digit(pos) {
            self.cur.set_pos(save);
            return Ok(None);
        }
        Ok(match next_token(&mut self.cur)?.0 {
            Tok::Int(i) => Some(Expr::Int(-i)),
            Tok::Float(f) => Some(Expr::Float(-f)),
            _ => {
                self.cur.set_pos(save);
                None
            }
        })
    }

    /// One of the operands Velocity 1.7's grammar allows where no expression may stand:
    /// method arguments and list and map elements (`Parameter`: a reference, a string,
    /// number or boolean literal, a list, a map or a range), an index (`IndexParameter`:
    /// a reference, a string, an integer or a boolean), a range's bound (a reference or an
    /// integer) and `#foreach`'s collection (`DirectiveArg`, as `Parameter`).
    fn parameter(&mut self, arg: Arg) -> Result<Expr, Error> {
        let (_, at) = self.peek()?;
        self.enter(at)?;
        let e = self.operand(arg);
        self.leave();
        e
    }

    fn operand(&mut self, arg: Arg) -> Result<Expr, Error> {
        let (tok, pos) = self.peek()?;
        let e = match tok {
            Tok::Dollar => self.primary()?,
            Tok::Punct("-") => match self.negative_literal()? {
                Some(e) => e,
                None => return Err(self.not_a_parameter(pos, arg)),
            },
            Tok::Int(_) => self.primary()?,
            Tok::Float(_) | Tok::Punct("[" | "{")
                if arg == Arg::Index || arg == Arg::RangeBound =>
            {
                return Err(self.not_a_parameter(pos, arg));
            }
            Tok::SingleQuoted(_) | Tok::DoubleQuoted(..) | Tok::Word("true" | "false")
                if arg == Arg::RangeBound =>
            {
                return Err(self.not_a_parameter(pos, arg));
            }
            Tok::Word("null") if arg == Arg::Index || arg == Arg::RangeBound => {
                return Err(self.not_a_parameter(pos, arg));
            }
            Tok::Float(_)
            | Tok::SingleQuoted(_)
            | Tok::DoubleQuoted(..)
            | Tok::Word("true" | "false" | "null")
            | Tok::Punct("[" | "{") => self.primary()?,
            _ => return Err(self.not_a_parameter(pos, arg)),
        };
        if matches!(e, Expr::Float(_)) && matches!(arg, Arg::Index | Arg::RangeBound) {
            return Err(self.not_a_parameter(pos, arg));
        }
        // An operator after the operand: an expression, which this place does not take.
        let (next, at) = self.peek()?;
        let operator = matches!(
            next,
            Tok::Punct(
                "+" | "-"
                    | "*"
                    | "/"
                    | "%"
                    | "=="
                    | "!="
                    | "<"
                    | "<="
                    | ">"
                    | ">="
                    | "&&"
                    | "||"
                    | "!"
                    | "("
            ) | Tok::Word("and" | "or" | "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "not")
        );
        if operator {
            return Err(self.cur.error(
                at,
                format!(
                    "Velocity 1.7 takes no expression {}: #set a variable to it first and use that",
                    arg.place()
                ),
            ));
        }
        Ok(e)
    }

    fn not_a_parameter(&self, pos: usize, arg: Arg) -> Error {
        let allowed = match arg {
            Arg::Method | Arg::Element | Arg::Directive => {
                "a reference, a string, number or boolean literal, a list, a map or a range"
            }
            Arg::Index => "a reference, a string, an integer or a boolean",
            Arg::RangeBound => "a reference or an integer",
        };
        self.cur.error(
            pos,
            format!(
                "Velocity 1.7 takes only {allowed} {}: #set a variable to anything else first and use that",
                arg.place()
            ),
        )
    }

    /// A double-quoted literal is a template of its own when it holds `$` or `#`.
    fn interpolated(&mut self, content: &str, offset: usize) -> Result<Expr, Error> {
        if !content.contains(['$', '#']) {
            return Ok(Expr::Str(content.into()));
        }
        self.enter(self.cur.pos())?;
        let mut sub = Parser {
            cur: Cursor::new(content, offset),
            tables: self.tables,
            depth: self.depth,
            construct_end: 0,
        };
        let (block, _) = sub.block(Ctx::Top)?;
        self.leave();
        Ok(match block.as_slice() {
            [] => Expr::Str("".into()),
            [Node::Text(t)] => Expr::Str(t.clone()),
            _ => Expr::Interpolated(block),
        })
    }

    fn list_or_range(&mut self, open: usize) -> Result<Expr, Error> {
        self.enter(open)?;
        let mut items = Vec::new();
        if let (Tok::Punct("]"), _) = self.peek()? {
            next_token(&mut self.cur)?;
            self.leave();
            return Ok(Expr::List(items));
        }
        let first = self.parameter(Arg::Element)?;
        if let (Tok::Punct(".."), _) = self.peek()? {
            if !matches!(first, Expr::Int(_) | Expr::Ref(_)) {
                return Err(self.cur.error(
                    open,
                    "a range's bounds are integers or references (Velocity 1.7's grammar)",
                ));
            }
            next_token(&mut self.cur)?;
            let last = self.parameter(Arg::RangeBound)?;
            let (tok, pos) = next_token(&mut self.cur)?;
            if tok != Tok::Punct("]") {
                return Err(self.cur.error(pos, "expected ']' to close range"));
            }
            self.leave();
            let span = self.cur.span_from(open);
            return Ok(Expr::Range(Box::new(first), Box::new(last), span));
        }
        items.push(first);
        loop {
            let (tok, pos) = next_token(&mut self.cur)?;
            match tok {
                Tok::Punct(",") => items.push(self.parameter(Arg::Element)?),
                Tok::Punct("]") => break,
                _ => return Err(self.cur.error(pos, "expected ',' or ']' in list")),
            }
        }
        self.leave();
        Ok(Expr::List(items))
    }

    fn map_literal(&mut self, open: usize) -> Result<Expr, Error> {
        self.enter(open)?;
        let mut entries = Vec::new();
        if let (Tok::Punct("}"), _) = self.peek()? {
            next_token(&mut self.cur)?;
            self.leave();
            return Ok(Expr::Map(entries));
        }
        loop {
            let key = self.parameter(Arg::Element)?;
            let (tok, pos) = next_token(&mut self.cur)?;
            if tok != Tok::Punct(":") {
                return Err(self.cur.error(pos, "expected ':' in map literal"));
            }
            let value = self.parameter(Arg::Element)?;
            entries.push((key, value));
            let (tok, pos) = next_token(&mut self.cur)?;
            match tok {
                Tok::Punct(",") => continue,
                Tok::Punct("}") => break,
                _ => return Err(self.cur.error(pos, "expected ',' or '}' in map literal")),
            }
        }
        self.leave();
        Ok(Expr::Map(entries))
    }
}

/// Where [`Parser::parameter`] reads an operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    Method,
    Element,
    Index,
    RangeBound,
    Directive,
}

impl Arg {
    fn place(self) -> &'static str {
        match self {
            Arg::Method => "as a method argument",
            Arg::Element => "as a list or map element",
            Arg::Index => "as an index",
            Arg::RangeBound => "as a range's bound",
            Arg::Directive => "as #foreach's collection",
        }
    }
}

fn flush(text: &mut String, nodes: &mut Block) {
    if !text.is_empty() {
        nodes.push(Node::Text(std::mem::take(text).into_boxed_str()));
    }
}
