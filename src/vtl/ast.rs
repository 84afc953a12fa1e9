//! The syntax tree a template compiles to. Built once by the parser, walked per request.

/// A byte range in the template source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
}

/// A variable name, interned at compile time: the evaluator keeps variables in a vector
/// indexed by this id instead of hashing names per access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct VarId(pub(crate) u32);

pub(crate) type Block = Vec<Node>;

/// Index of a `#define` body in the template's table of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefineId(pub(crate) u32);

#[derive(Debug)]
pub(crate) enum Node {
    /// Literal text, emitted as is.
    Text(Box<str>),
    /// `$a.b(...)[i]`: rendered; null renders as the empty string.
    Ref(Box<Reference>),
    /// `\$a.b`: evaluated, then printed as its text, `literal` (the backslashes before it
    /// halved); a null keeps one backslash more, as Velocity 1.7 prints it.
    EscapedRef {
        reference: Box<Reference>,
        literal: Box<str>,
    },
    /// `#set($target = value)`.
    Set {
        target: Box<Reference>,
        value: Expr,
        span: Span,
    },
    /// `#if(..) .. #elseif(..) .. #else .. #end`.
    If {
        branches: Vec<(Expr, Block)>,
        otherwise: Option<Block>,
    },
    /// `#foreach($var in iterable) .. #end`.
    Foreach {
        var: VarId,
        iterable: Expr,
        body: Block,
        span: Span,
    },
    /// `#define($var) .. #end`: binds a block rendered when `$var` is used.
    Define { var: VarId, body: DefineId },
    /// `#break`: leaves the innermost `#foreach`.
    Break,
    /// `#stop`: ends rendering, keeping what was output so far.
    Stop,
}

/// A reference: a root variable followed by property, method and index accesses.
#[derive(Debug)]
pub(crate) struct Reference {
    pub(crate) root: VarId,
    pub(crate) parts: Vec<Part>,
    pub(crate) span: Span,
}

#[derive(Debug)]
pub(crate) enum Part {
    /// `.name`: a map key or a bean-style getter (`getName()` / `isName()`).
    Property(Box<str>),
    /// `.name(args)`.
    Method(Box<str>, Vec<Expr>, Span),
    /// `[expr]`.
    Index(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug)]
pub(crate) enum Expr {
    /// `null`: not in Velocity 1.7's grammar, but API Gateway takes it (recorded).
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A single-quoted literal, or a double-quoted one with nothing to interpolate.
    Str(Box<str>),
    /// A double-quoted literal containing `$` or `#`: a small template rendered to a string.
    Interpolated(Block),
    Ref(Box<Reference>),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Range(Box<Expr>, Box<Expr>, Span),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>, Span),
}
