//! Walking the tree for one render.
//!
//! Everything here is bounded: a step budget ("fuel") charged per node, expression, loop
//! iteration and per 64 bytes of every string built; a cap on `#foreach` iterations; a cap
//! on output size; and a cap on nesting of `#define` expansion and string interpolation.
//! Exceeding any of them is a typed [`Error`], never a hang.
//!
//! Native containers made during a render are remembered and emptied when the render ends,
//! so reference cycles a template builds (`$l.add($l)`) cannot leak.

use std::fmt::Write as _;
use std::rc::Rc;

use super::Template;
use super::ast::{BinOp, Block, DefineId, Expr, Node, Part, Reference, Span, VarId};
use super::error::{Error, ErrorKind};
use super::methods;
use super::value::{List, LoopInfo, Map, Value, values_equal};

/// Objects and variables the embedding application provides (`$input`, `$util`, `$context`).
pub trait Host {
    /// A variable the template did not set itself.
    fn global(&self, name: &str) -> Option<Value>;
    /// `$object.name` on a host object.
    fn property(&self, object: u32, name: &str) -> Result<Value, Error>;
    /// `$object.method(args)` on a host object; `Ok(None)` if there is no such method.
    fn call(&self, object: u32, method: &str, args: &[Value]) -> Result<Option<Value>, Error>;
}

/// A host with no globals, for plain Velocity rendering.
pub struct NoHost;

impl Host for NoHost {
    fn global(&self, _: &str) -> Option<Value> {
        None
    }
    fn property(&self, _: u32, _: &str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn call(&self, _: u32, _: &str, _: &[Value]) -> Result<Option<Value>, Error> {
        Ok(None)
    }
}

/// Bounds on one render. The defaults suit an ingestion gateway: API Gateway's 1,000
/// iteration cap, and enough budget for a 1,000-event batch with room to spare.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Iterations allowed per `#foreach` (API Gateway: 1,000).
    pub max_loop_iterations: usize,
    /// Evaluation steps per render.
    pub max_steps: u64,
    /// Bytes of output, and of any single string built while rendering.
    pub max_output_bytes: usize,
    /// Elements a range literal `[a..b]` may produce.
    pub max_range: usize,
    /// Nesting of `#define` expansion and string interpolation at render time.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_loop_iterations: 1_000,
            max_steps: 1_000_000,
            max_output_bytes: 16 * 1024 * 1024,
            max_range: 100_000,
            max_depth: 32,
        }
    }
}

/// Bytes of a built string that cost one step.
const BYTES_PER_STEP: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Stop,
}

enum Container {
    List(List),
    Map(Map),
}

pub(crate) struct Eval<'t> {
    tpl: &'t Template,
    host: &'t dyn Host,
    limits: &'t Limits,
    vars: Vec<Option<Value>>,
    loops: Vec<LoopInfo>,
    fuel: u64,
    depth: usize,
    out: String,
    arena: Vec<Container>,
}

impl Drop for Eval<'_> {
    fn drop(&mut self) {
        for c in self.arena.drain(..) {
            match c {
                Container::List(l) => {
                    if let Ok(mut l) = l.try_borrow_mut() {
                        l.clear();
                    }
                }
                Container::Map(m) => {
                    if let Ok(mut m) = m.try_borrow_mut() {
                        m.clear();
                    }
                }
            }
        }
    }
}

pub(crate) fn render(
    tpl: &Template,
    host: &dyn Host,
    limits: &Limits,
    out: String,
) -> Result<String, Error> {
    let mut ev = Eval {
        tpl,
        host,
        limits,
        vars: vec![None; tpl.names.len()],
        loops: Vec::new(),
        fuel: limits.max_steps,
        depth: 0,
        out,
        arena: Vec::new(),
    };
    ev.block(&tpl.block)?;
    Ok(std::mem::take(&mut ev.out))
}

fn err(kind: ErrorKind, detail: impl Into<String>) -> Error {
    Error::new(kind, detail)
}

impl<'t> Eval<'t> {
    fn step(&mut self) -> Result<(), Error> {
        self.charge(1)
    }

    fn charge(&mut self, steps: u64) -> Result<(), Error> {
        match self.fuel.checked_sub(steps) {
            Some(f) => {
                self.fuel = f;
                Ok(())
            }
            None => {
                self.fuel = 0;
                Err(err(
                    ErrorKind::FuelExhausted,
                    format!("template took more than {} steps", self.limits.max_steps),
                ))
            }
        }
    }

    fn check_len(&self, len: usize) -> Result<(), Error> {
        if len > self.limits.max_output_bytes {
            return Err(err(
                ErrorKind::OutputLimit,
                format!("output larger than {} bytes", self.limits.max_output_bytes),
            ));
        }
        Ok(())
    }

    /// A string built by a method or an operator: charged and size-checked.
    pub(crate) fn make_string(&mut self, s: String) -> Result<Value, Error> {
        self.check_len(s.len())?;
        self.charge((s.len() / BYTES_PER_STEP) as u64)?;
        Ok(Value::string(s))
    }

    pub(crate) fn new_list(&mut self, items: Vec<Value>) -> Value {
        let l: List = Rc::new(std::cell::RefCell::new(items));
        self.arena.push(Container::List(l.clone()));
        Value::List(l)
    }

    fn new_map(&mut self) -> Map {
        let m: Map = Rc::default();
        self.arena.push(Container::Map(m.clone()));
        m
    }

    pub(crate) fn host_call(
        &mut self,
        id: u32,
        name: &str,
        args: &[Value],
    ) -> Result<Option<Value>, Error> {
        let v = self.host.call(id, name, args)?;
        if let Some(Value::Str(s)) = &v {
            self.check_len(s.len())?;
            self.charge((s.len() / BYTES_PER_STEP) as u64)?;
        }
        Ok(v)
    }

    fn emit(&mut self, s: &str) -> Result<(), Error> {
        self.out.push_str(s);
        self.check_len(self.out.len())
    }

    // ----- blocks ---------------------------------------------------------------------------

    fn block(&mut self, block: &'t Block) -> Result<Flow, Error> {
        for node in block {
            self.step()?;
            let flow = match node {
                Node::Text(t) => {
                    self.emit(t)?;
                    Flow::Normal
                }
                Node::Ref(r) => {
                    let v = self.reference(r).map_err(|e| e.at(r.span))?;
                    self.emit_value(&v).map_err(|e| e.at(r.span))?
                }
                Node::EscapedRef { reference, literal } => {
                    let v = self
                        .reference(reference)
                        .map_err(|e| e.at(reference.span))?;
                    if matches!(v, Value::Null) {
                        self.emit("\\")?;
                    }
                    self.emit(literal)?;
                    Flow::Normal
                }
                Node::Set {
                    target,
                    value,
                    span,
                } => {
                    let v = self.expr(value).map_err(|e| e.at(*span))?;
                    self.assign(target, v).map_err(|e| e.at(*span))?;
                    Flow::Normal
                }
                Node::If {
                    branches,
                    otherwise,
                } => self.if_node(branches, otherwise.as_ref())?,
                Node::Foreach {
                    var,
                    iterable,
                    body,
                    span,
                } => self.foreach(*var, iterable, body, *span)?,
                Node::Define { var, body } => {
                    self.vars[var.0 as usize] = Some(Value::Define(*body));
                    Flow::Normal
                }
                Node::Break => Flow::Break,
                Node::Stop => Flow::Stop,
            };
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn if_node(
        &mut self,
        branches: &'t [(Expr, Block)],
        otherwise: Option<&'t Block>,
    ) -> Result<Flow, Error> {
        for (cond, body) in branches {
            if self.expr(cond)?.is_truthy() {
                return self.block(body);
            }
        }
        match otherwise {
            Some(body) => self.block(body),
            None => Ok(Flow::Normal),
        }
    }

    fn foreach(
        &mut self,
        var: VarId,
        iterable: &'t Expr,
        body: &'t Block,
        span: Span,
    ) -> Result<Flow, Error> {
        enum Source {
            Items(Vec<Value>),
            JsonArray(super::value::JsonRef),
        }
        let coll = self.expr(iterable).map_err(|e| e.at(span))?;
        let (source, len) = match coll {
            Value::List(l) => {
                let items = l.borrow().clone();
                let n = items.len();
                (Source::Items(items), n)
            }
            Value::Map(m) => {
                let items: Vec<Value> = m.borrow().values().cloned().collect();
                let n = items.len();
                (Source::Items(items), n)
            }
            Value::Json(r) => {
                let (is_array, n) = r.with(|node| match node {
                    Some(serde_json::Value::Array(a)) => (true, a.len()),
                    Some(serde_json::Value::Object(m)) => (false, m.len()),
                    _ => (false, 0),
                });
                if is_array {
                    (Source::JsonArray(r), n)
                } else {
                    let values = methods::call(self, &Value::Json(r), "values", &[])?;
                    let items = match values {
                        Some(Value::List(l)) => l.borrow().clone(),
                        _ => Vec::new(),
                    };
                    (Source::Items(items), n)
                }
            }
            // Strings, numbers and nulls are not iterable: the loop runs zero times.
            _ => return Ok(Flow::Normal),
        };
        if len > self.limits.max_loop_iterations {
            return Err(err(
                ErrorKind::LoopLimit,
                format!(
                    "#foreach over {len} items; at most {} iterations are allowed",
                    self.limits.max_loop_iterations
                ),
            )
            .at(span));
        }
        let slot = var.0 as usize;
        let saved = self.vars[slot].take();
        self.loops.push(LoopInfo { index: 0, len });
        let mut flow = Flow::Normal;
        for i in 0..len {
            self.step()?;
            let item = match &source {
                Source::Items(items) => items[i].clone(),
                Source::JsonArray(r) => r.child_index(i),
            };
            self.vars[slot] = Some(item);
            if let Some(top) = self.loops.last_mut() {
                top.index = i;
            }
            match self.block(body)? {
                Flow::Normal => {}
                Flow::Break => break,
                Flow::Stop => {
                    flow = Flow::Stop;
                    break;
                }
            }
        }
        self.loops.pop();
        self.vars[slot] = saved;
        Ok(flow)
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(err(
                ErrorKind::DepthLimit,
                format!(
                    "#define expansion or string interpolation nested deeper than {}",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(())
    }

    /// Renders a block into a string of its own (string interpolation, `#define` used as a
    /// value).
    fn render_to_string(&mut self, block: &'t Block) -> Result<String, Error> {
        self.enter()?;
        let saved = std::mem::take(&mut self.out);
        let result = self.block(block);
        let s = std::mem::replace(&mut self.out, saved);
        self.depth -= 1;
        result?;
        self.charge((s.len() / BYTES_PER_STEP) as u64)?;
        Ok(s)
    }

    fn define_block(&self, id: DefineId) -> &'t Block {
        &self.tpl.defines[id.0 as usize]
    }

    fn emit_value(&mut self, v: &Value) -> Result<Flow, Error> {
        match v {
            Value::Null => {}
            Value::Str(s) => self.emit(s)?,
            Value::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            Value::Define(id) => {
                self.enter()?;
                let flow = self.block(self.define_block(*id));
                self.depth -= 1;
                if flow? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
            other => {
                let s = other.to_java_string()?;
                self.emit(&s)?;
            }
        }
        Ok(Flow::Normal)
    }

    // ----- references -----------------------------------------------------------------------

    fn lookup(&mut self, id: VarId) -> Value {
        let slot = id.0 as usize;
        if let Some(v) = &self.vars[slot] {
            return v.clone();
        }
        let name: &str = &self.tpl.names[slot];
        match (name, self.loops.last()) {
            ("foreach", Some(l)) => return Value::Loop(*l),
            ("velocityCount", Some(l)) => return Value::Int(l.index as i64 + 1),
            ("velocityHasNext", Some(l)) => return Value::Bool(l.index + 1 < l.len),
            _ => {}
        }
        match self.host.global(name) {
            Some(v) => {
                self.vars[slot] = Some(v.clone());
                v
            }
            None => Value::Null,
        }
    }

    /// Evaluates a reference; null stays null here (text rendering prints nothing for it,
    /// expressions turn it into the empty string).
    fn reference(&mut self, r: &'t Reference) -> Result<Value, Error> {
        let mut v = self.lookup(r.root);
        for part in &r.parts {
            if let Value::Define(id) = v {
                v = Value::string(self.render_to_string(self.define_block(id))?);
            }
            if v.is_null() {
                return Ok(Value::Null);
            }
            v = self.part(&v, part)?;
        }
        Ok(v)
    }

    fn part(&mut self, v: &Value, part: &'t Part) -> Result<Value, Error> {
        match part {
            Part::Property(name) => self.property(v, name),
            Part::Method(name, args, span) => {
                self.step()?;
                let args = args
                    .iter()
                    .map(|a| self.expr(a))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = methods::call(self, v, name, &args).map_err(|e| e.at(*span))?;
                Ok(out.unwrap_or(Value::Null))
            }
            Part::Index(e) => {
                let i = self.expr(e)?;
                Ok(index(v, &i)?)
            }
        }
    }

    fn property(&mut self, v: &Value, name: &str) -> Result<Value, Error> {
        match v {
            Value::Map(_) => Ok(methods::map_get(v, name)),
            Value::Json(r) if r.is_object() => Ok(r.child_key(name)),
            Value::Entry(e) => Ok(match name {
                "key" => Value::Str(e.0.clone()),
                "value" => e.1.clone(),
                _ => Value::Null,
            }),
            Value::Loop(l) => Ok(match name {
                "index" => Value::Int(l.index as i64),
                "count" => Value::Int(l.index as i64 + 1),
                "hasNext" => Value::Bool(l.index + 1 < l.len),
                "first" => Value::Bool(l.index == 0),
                "last" => Value::Bool(l.index + 1 == l.len),
                _ => Value::Null,
            }),
            Value::Host(id) => self.host.property(*id, name),
            _ => {
                // A bean property: `getName()`, then `isName()`.
                let mut cap = String::with_capacity(name.len() + 3);
                let mut chars = name.chars();
                if let Some(c) = chars.next() {
                    cap.extend(c.to_uppercase());
                    cap.push_str(chars.as_str());
                }
                for prefix in ["get", "is"] {
                    let method = format!("{prefix}{cap}");
                    if let Some(out) = methods::call(self, v, &method, &[])? {
                        return Ok(out);
                    }
                }
                Ok(Value::Null)
            }
        }
    }

    fn assign(&mut self, target: &'t Reference, value: Value) -> Result<(), Error> {
        let Some((last, init)) = target.parts.split_last() else {
            self.vars[target.root.0 as usize] = Some(value);
            return Ok(());
        };
        let mut obj = self.lookup(target.root);
        for part in init {
            if obj.is_null() {
                return Ok(());
            }
            obj = self.part(&obj, part)?;
        }
        match last {
            Part::Property(name) => {
                if matches!(obj, Value::Map(_) | Value::Json(_)) {
                    methods::map_put(&obj, Rc::from(&**name), value)?;
                }
            }
            Part::Index(e) => {
                let i = self.expr(e)?;
                let is_list = match &obj {
                    Value::List(_) => true,
                    Value::Json(r) => r.is_array(),
                    _ => false,
                };
                if is_list {
                    if let Some(i) = i.as_int() {
                        methods::call(self, &obj, "set", &[Value::Int(i), value])?;
                    }
                } else if matches!(obj, Value::Map(_) | Value::Json(_)) {
                    methods::map_put(&obj, Rc::from(i.to_java_string()?), value)?;
                }
            }
            Part::Method(..) => {}
        }
        Ok(())
    }

    // ----- expressions ----------------------------------------------------------------------

    fn expr(&mut self, e: &'t Expr) -> Result<Value, Error> {
        self.step()?;
        Ok(match e {
            Expr::Null => Value::Null,
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Int(i) => Value::Int(*i),
            Expr::Float(f) => Value::Float(*f),
            Expr::Str(s) => Value::str(s),
            Expr::Interpolated(block) => Value::string(self.render_to_string(block)?),
            Expr::Ref(r) => match self.reference(r).map_err(|e| e.at(r.span))? {
                // API Gateway replaces a null reference by the empty string.
                Value::Null => Value::str(""),
                Value::Define(id) => Value::string(self.render_to_string(self.define_block(id))?),
                v => v,
            },
            Expr::List(items) => {
                let items = items
                    .iter()
                    .map(|i| self.expr(i))
                    .collect::<Result<Vec<_>, _>>()?;
                self.new_list(items)
            }
            Expr::Map(entries) => {
                let map = self.new_map();
                for (k, v) in entries {
                    let k = self.expr(k)?;
                    let k: Rc<str> = match k {
                        Value::Str(s) => s,
                        other => Rc::from(other.to_java_string()?),
                    };
                    let v = self.expr(v)?;
                    map.borrow_mut().insert(k, v);
                }
                Value::Map(map)
            }
            Expr::Range(a, b, span) => self.range(a, b).map_err(|e| e.at(*span))?,
            Expr::Not(e) => Value::Bool(!self.expr(e)?.is_truthy()),
            Expr::Binary(op, l, r, span) => self.binary(*op, l, r).map_err(|e| e.at(*span))?,
        })
    }

    fn range(&mut self, a: &'t Expr, b: &'t Expr) -> Result<Value, Error> {
        let (a, b) = (self.expr(a)?, self.expr(b)?);
        let (Some(a), Some(b)) = (range_bound(&a), range_bound(&b)) else {
            return Ok(Value::Null);
        };
        let len = a.abs_diff(b) as usize + 1;
        if len > self.limits.max_range {
            return Err(err(
                ErrorKind::LoopLimit,
                format!(
                    "range of {len} elements; at most {} are allowed",
                    self.limits.max_range
                ),
            ));
        }
        self.charge(len as u64)?;
        let items: Vec<Value> = if a <= b {
            (a..=b).map(Value::Int).collect()
        } else {
            (b..=a).rev().map(Value::Int).collect()
        };
        Ok(self.new_list(items))
    }

    fn binary(&mut self, op: BinOp, l: &'t Expr, r: &'t Expr) -> Result<Value, Error> {
        match op {
            BinOp::Or => {
                let v = self.expr(l)?.is_truthy() || self.expr(r)?.is_truthy();
                return Ok(Value::Bool(v));
            }
            BinOp::And => {
                let v = self.expr(l)?.is_truthy() && self.expr(r)?.is_truthy();
                return Ok(Value::Bool(v));
            }
            _ => {}
        }
        let (a, b) = (self.expr(l)?, self.expr(r)?);
        Ok(match op {
            BinOp::Eq => Value::Bool(values_equal(&a, &b)?),
            BinOp::Ne => Value::Bool(!values_equal(&a, &b)?),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                // Velocity 1.7 compares numbers only; anything else is false.
                let ord = match (&a, &b) {
                    (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
                    _ => match (a.as_f64(), b.as_f64()) {
                        (Some(x), Some(y)) => x.partial_cmp(&y),
                        _ => None,
                    },
                };
                Value::Bool(ord.is_some_and(|o| match op {
                    BinOp::Lt => o.is_lt(),
                    BinOp::Le => o.is_le(),
                    BinOp::Gt => o.is_gt(),
                    _ => o.is_ge(),
                }))
            }
            BinOp::Add if !(a.is_number() && b.is_number()) => {
                if matches!(a, Value::Str(_)) || matches!(b, Value::Str(_)) {
                    let s = format!("{}{}", a.to_java_string()?, b.to_java_string()?);
                    self.make_string(s)?
                } else {
                    Value::Null
                }
            }
            _ => arithmetic(op, &a, &b),
        })
    }
}

fn range_bound(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `$v[i]`: list index or map key; out of range or the wrong type is null.
fn index(v: &Value, i: &Value) -> Result<Value, Error> {
    Ok(match v {
        Value::List(l) => i
            .as_int()
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| l.borrow().get(i).cloned())
            .unwrap_or(Value::Null),
        Value::Json(r) if r.is_array() => match i.as_int().and_then(|i| usize::try_from(i).ok()) {
            Some(i) => r.child_index(i),
            None => Value::Null,
        },
        Value::Json(_) | Value::Map(_) => methods::map_get(v, &i.to_java_string()?),
        _ => Value::Null,
    })
}

/// Java arithmetic on two numbers: integer operations stay integral (overflow widens to a
/// double), any double makes the result a double; division or remainder by zero is null, as
/// in Velocity.
fn arithmetic(op: BinOp, a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let (x, y) = (*x, *y);
            let r = match op {
                BinOp::Add => x.checked_add(y),
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div if y == 0 => return Value::Null,
                BinOp::Div => x.checked_div(y),
                BinOp::Rem if y == 0 => return Value::Null,
                BinOp::Rem => x.checked_rem(y),
                _ => return Value::Null,
            };
            match r {
                Some(r) => Value::Int(r),
                None => arithmetic(op, &Value::Float(x as f64), &Value::Float(y as f64)),
            }
        }
        _ => {
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return Value::Null;
            };
            match op {
                BinOp::Add => Value::Float(x + y),
                BinOp::Sub => Value::Float(x - y),
                BinOp::Mul => Value::Float(x * y),
                BinOp::Div if y == 0.0 => Value::Null,
                BinOp::Div => Value::Float(x / y),
                BinOp::Rem if y == 0.0 => Value::Null,
                BinOp::Rem => Value::Float(x % y),
                _ => Value::Null,
            }
        }
    }
}
