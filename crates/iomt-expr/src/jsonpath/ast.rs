//! The compiled form of a path: one [`Step`] per Newtonsoft `PathFilter`.
//!
//! The step list mirrors the filter list Newtonsoft's `JPath` parser builds, one to one, so that
//! evaluation can follow the same pipeline (each step maps every token produced by the previous
//! one to zero or more tokens, in order).

use regex::Regex;

/// One stage of a path.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// `.name`, `name`, `['name']` (`FieldFilter` with a name): the member's value, objects only.
    Field(Box<str>),
    /// `.*` (`FieldFilter` without a name): every member value of an object (not array items).
    AllFields,
    /// `['a','b']` (`FieldMultipleFilter`): each named member that exists, in the order written.
    Fields(Box<[Box<str>]>),
    /// `[n]` (`ArrayIndexFilter`): one array item. A negative `n` on an array is an error.
    Index(i32),
    /// `[*]` (`ArrayIndexFilter` without an index): every array item (not object members).
    AllIndexes,
    /// `[1,0]` (`ArrayMultipleIndexFilter`): the listed items, in the order written.
    Indexes(Box<[i32]>),
    /// `[a:b:c]` (`ArraySliceFilter`). The step is never zero (rejected when compiling).
    Slice(Slice),
    /// `..name` / `..['name']` (`ScanFilter`): values of members called `name` anywhere below.
    Scan(Box<str>),
    /// `..*` (`ScanFilter` without a name): the node itself, then every value below it.
    ScanAll,
    /// `..['a','b']` (`ScanMultipleFilter`).
    ScanFields(Box<[Box<str>]>),
    /// `[?(…)]` (`QueryFilter`): the children (array items, object *members*) that match.
    Filter(Box<Filter>),
    /// `..[?(…)]` (`QueryScanFilter`): the node and all its descendants that match.
    ScanFilter(Box<Filter>),
    /// `$` at the start of a path inside a filter (`RootFilter`).
    Root,
}

impl Step {
    /// Whether the step maps one token to at most one token (no branching).
    pub(super) fn is_single(&self) -> bool {
        matches!(self, Step::Field(_) | Step::Index(_) | Step::Root)
    }
}

/// A filter expression and the kinds of tokens it can possibly accept.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    pub(super) expr: Expr,
    /// [`Kinds`] bits: tokens of other kinds are rejected without evaluating `expr` (e.g.
    /// `@heartRate` can only hold for objects, since it reads a member first).
    pub(super) accepts: u8,
}

/// Token kinds, as bits.
pub(super) struct Kinds;

impl Kinds {
    /// A JSON object or the virtual `WithMatch` root.
    pub(super) const OBJECT: u8 = 1;
    pub(super) const ARRAY: u8 = 2;
    pub(super) const SCALAR: u8 = 4;
    /// An object member (`JProperty`).
    pub(super) const MEMBER: u8 = 8;
    pub(super) const ANY: u8 = 15;
}

impl Filter {
    pub(super) fn new(expr: Expr) -> Filter {
        let accepts = expr.accepts();
        Filter { expr, accepts }
    }
}

impl Expr {
    /// The token kinds for which the expression may be true.
    fn accepts(&self) -> u8 {
        match self {
            Expr::And(items) => items.iter().fold(Kinds::ANY, |k, e| k & e.accepts()),
            Expr::Or(items) => items.iter().fold(0, |k, e| k | e.accepts()),
            Expr::Exists(operand) => operand.accepts(),
            // A comparison needs a token on both sides.
            Expr::Cmp(cmp) => cmp.left.accepts() & cmp.right.accepts(),
        }
    }
}

impl Operand {
    /// The kinds of `@` for which the operand may yield a token.
    fn accepts(&self) -> u8 {
        let Operand::Path(path) = self else {
            return Kinds::ANY;
        };
        match path.steps.first() {
            Some(Step::Field(_) | Step::AllFields | Step::Fields(_)) => Kinds::OBJECT,
            Some(Step::Index(_) | Step::AllIndexes | Step::Indexes(_) | Step::Slice(_)) => {
                Kinds::ARRAY
            }
            _ => Kinds::ANY,
        }
    }
}

/// Slice bounds as written; `None` when omitted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slice {
    pub(super) start: Option<i32>,
    pub(super) end: Option<i32>,
    pub(super) step: Option<i32>,
}

/// A filter expression.
///
/// Newtonsoft has no operator precedence: `a && b || c` groups as `a && (b || c)` (each change of
/// operator opens a nested group), and the parser reproduces that tree.
#[derive(Debug, Clone)]
pub(super) enum Expr {
    /// All must hold (short-circuit, in order).
    And(Box<[Expr]>),
    /// One must hold (short-circuit, in order).
    Or(Box<[Expr]>),
    /// `[?(@x)]`: the operand yields at least one token (a literal always does).
    Exists(Operand),
    /// `left op right`.
    Cmp(Box<Cmp>),
}

/// A binary comparison.
#[derive(Debug, Clone)]
pub(super) struct Cmp {
    pub(super) op: Op,
    pub(super) left: Operand,
    pub(super) right: Operand,
    /// For `=~` with a literal right side: the regex, compiled once.
    pub(super) regex: Option<Regex>,
}

/// Comparison operators (`<>` is `!=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    Lt,
    Le,
    Gt,
    Ge,
    Regex,
}

/// One side of a comparison.
#[derive(Debug, Clone)]
pub(super) enum Operand {
    /// `@…` or `$…`.
    Path(SubPath),
    /// A literal value.
    Lit(Lit),
}

/// A path inside a filter.
#[derive(Debug, Clone)]
pub(super) struct SubPath {
    pub(super) steps: Box<[Step]>,
    /// Every step is [`Step::is_single`]: evaluated without a result sink.
    pub(super) simple: bool,
}

impl SubPath {
    pub(super) fn new(steps: Vec<Step>) -> SubPath {
        let simple = steps.iter().all(Step::is_single);
        SubPath {
            steps: steps.into_boxed_slice(),
            simple,
        }
    }
}

/// A literal in a filter. A `/regex/flags` literal is the string `"/regex/flags"`, as in
/// Newtonsoft (so `@.a == /x/` compares with that text).
#[derive(Debug, Clone)]
pub(super) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}
