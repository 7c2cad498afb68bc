//! The compiled form of an expression.

use std::sync::Arc;

use super::functions::Func;

/// A node and the height of its subtree (bounded by the parser, so that evaluating and
/// dropping it never recurse too deep).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) depth: u32,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal value (from a backtick literal or a raw string), shared between threads.
#[derive(Debug, Clone)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Arc<str>),
    Array(Arc<[Lit]>),
    Object(Arc<[(Arc<str>, Lit)]>),
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// `@`
    Current,
    /// `name` / `"name"`
    Field(Arc<str>),
    /// `a.b.c`: a chain of at least two fields (the common case, evaluated in one loop).
    Path(Vec<Arc<str>>),
    /// `lhs.rhs` (and `lhs[n]`): null on the left stays null.
    Sub(Box<Node>, Box<Node>),
    /// `lhs | rhs`: ends any projection on the left; `rhs` sees null too.
    Pipe(Box<Node>, Box<Node>),
    /// `[n]` applied to the current node.
    Index(i64),
    /// `[start:stop:step]` applied to the current node (yields an array).
    Slice {
        start: Option<i64>,
        stop: Option<i64>,
        step: i64,
    },
    /// Evaluate `lhs`; if an array, apply `rhs` to each element, dropping nulls.
    Projection(Box<Node>, Box<Node>),
    /// `lhs.*`: evaluate `lhs`; if an object, apply `rhs` to each member value.
    ValueProjection(Box<Node>, Box<Node>),
    /// `lhs[?cond]rhs`
    Filter {
        lhs: Box<Node>,
        cond: Box<Node>,
        rhs: Box<Node>,
    },
    /// `lhs[]` (flatten one level; the surrounding [`Kind::Projection`] projects).
    Flatten(Box<Node>),
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Compare(Cmp, Box<Node>, Box<Node>),
    Literal(Lit),
    MultiList(Vec<Node>),
    MultiHash(Vec<(Arc<str>, Node)>),
    Call(Func, Vec<Node>),
    /// `&expr`: only meaningful as a function argument; elsewhere it evaluates `expr`.
    ExpRef(Box<Node>),
}

impl Node {
    pub(crate) fn leaf(kind: Kind) -> Node {
        Node { kind, depth: 1 }
    }

    pub(crate) fn new(kind: Kind) -> Node {
        let depth = 1 + kind.child_depth();
        Node { kind, depth }
    }

    /// Whether the result of this node is, in JmesPath.Net's terms, a *projection* (a list of
    /// matches rather than one value). `Or`/`And` depend on the data and are handled by the
    /// evaluator.
    pub(crate) fn is_projection(&self) -> bool {
        match &self.kind {
            Kind::Projection(..)
            | Kind::ValueProjection(..)
            | Kind::Filter { .. }
            | Kind::Slice { .. } => true,
            Kind::Sub(_, rhs) | Kind::Pipe(_, rhs) => rhs.is_projection(),
            Kind::ExpRef(inner) => inner.is_projection(),
            _ => false,
        }
    }
}

impl Kind {
    fn child_depth(&self) -> u32 {
        match self {
            Kind::Current
            | Kind::Field(_)
            | Kind::Path(_)
            | Kind::Index(_)
            | Kind::Slice { .. }
            | Kind::Literal(_) => 0,
            Kind::Sub(a, b)
            | Kind::Pipe(a, b)
            | Kind::Projection(a, b)
            | Kind::ValueProjection(a, b)
            | Kind::Or(a, b)
            | Kind::And(a, b)
            | Kind::Compare(_, a, b) => a.depth.max(b.depth),
            Kind::Filter { lhs, cond, rhs } => lhs.depth.max(cond.depth).max(rhs.depth),
            Kind::Flatten(a) | Kind::Not(a) | Kind::ExpRef(a) => a.depth,
            Kind::MultiList(items) | Kind::Call(_, items) => {
                items.iter().map(|n| n.depth).max().unwrap_or(0)
            }
            Kind::MultiHash(items) => items.iter().map(|(_, n)| n.depth).max().unwrap_or(0),
        }
    }
}
