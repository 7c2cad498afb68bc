//! Evaluation: Newtonsoft's lazy filter pipeline as a depth-first push.
//!
//! Newtonsoft chains one lazy enumerator per step, so results come out depth-first: every token
//! the first step yields is followed through all later steps before the first step produces its
//! next token. [`run`] does the same by recursion over the remaining steps, handing each final
//! token to a sink that may stop the evaluation early (`SelectToken` stops at the second result,
//! an existence test at the first). Errors therefore surface exactly when Newtonsoft's would.
//!
//! Tokens are Newtonsoft's `JToken`s seen over a `sonic_rs::Value`: a value, an object *member*
//! (`JProperty`, which filters and `..` scans visit), or the virtual `WithMatch` root.
//! Descendant walks recurse up to a budget shared by nested scans ([`RECURSION_BUDGET`]) and
//! continue below it with an explicit heap stack, so deep documents cannot overflow the call
//! stack.
//!
//! Cost model: every sonic-rs type check or string read on a parsed node re-derives the node
//! (several ns each), so a token's type is resolved once ([`Tok::resolve`]) and the resolved
//! form is what walks and filter tests pass around.

use std::cell::Cell;

use sonic_rs::value::object::Iter as ObjectIter;
use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait, Object, Value};

use super::ast::{Cmp, Expr, Filter, Kinds, Operand, Slice, Step, SubPath};
use super::compare::{Jv, matches};
use crate::scope::MATCHED_TOKEN;

/// A Newtonsoft `JToken` over the parsed document.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tok<'a> {
    /// A JSON value whose type has not been looked at yet.
    Val(&'a Value),
    /// A JSON object (resolved).
    Obj(&'a Value, &'a Object),
    /// A JSON array (resolved).
    Arr(&'a Value, &'a [Value]),
    /// A JSON string, number, boolean or null (resolved).
    Scalar(&'a Value),
    /// An object member (`JProperty`): its name and value.
    Prop(&'a str, &'a Value),
    /// The `WithMatch` overlay object.
    Root,
}

impl<'a> Tok<'a> {
    /// Resolves the type of a [`Tok::Val`]; other tokens are returned as they are.
    #[inline(always)]
    pub(super) fn resolve(self) -> Tok<'a> {
        let Tok::Val(v) = self else {
            return self;
        };
        match v.get_type() {
            JsonType::Object => match v.as_object() {
                Some(o) => Tok::Obj(v, o),
                None => Tok::Scalar(v),
            },
            JsonType::Array => match v.as_array() {
                Some(a) => Tok::Arr(v, a.as_slice()),
                None => Tok::Scalar(v),
            },
            _ => Tok::Scalar(v),
        }
    }

    /// The token's kind, as a [`Kinds`] bit (all bits when not resolved yet).
    #[inline(always)]
    fn kind(self) -> u8 {
        match self {
            Tok::Obj(..) | Tok::Root => Kinds::OBJECT,
            Tok::Arr(..) => Kinds::ARRAY,
            Tok::Scalar(_) => Kinds::SCALAR,
            Tok::Prop(..) => Kinds::MEMBER,
            Tok::Val(_) => Kinds::ANY,
        }
    }

    /// The JSON value, unless the token is a member or the virtual root.
    #[inline]
    pub(super) fn value(self) -> Option<&'a Value> {
        match self {
            Tok::Val(v) | Tok::Obj(v, _) | Tok::Arr(v, _) | Tok::Scalar(v) => Some(v),
            Tok::Prop(..) | Tok::Root => None,
        }
    }
}

/// Why evaluation stopped with an error (Newtonsoft throws).
#[derive(Debug)]
pub(super) enum EvalError {
    /// `[n]` with `n < 0` applied to an array (`ArgumentOutOfRangeException`).
    NegativeIndex(i32),
    /// A comparison had to convert a value and could not (`FormatException` and friends).
    Convert(String),
    /// A regex read from the document is not usable.
    Regex { pattern: String, reason: String },
    /// The step budget ran out.
    TooMuchWork,
}

/// How many steps (path stages applied to a token, nodes visited by a scan) one evaluation may
/// take. Mappings need tens; repeated `..` scans multiply the work and would otherwise stall the
/// pipeline on one message (found by fuzzing).
pub(super) const STEP_BUDGET: u64 = 1_000_000;

/// Spends one step of the evaluation's budget.
#[inline]
fn spend(ctx: &Ctx<'_>) -> EResult<()> {
    let left = ctx.steps_left.get();
    if left == 0 {
        return Err(EvalError::TooMuchWork);
    }
    ctx.steps_left.set(left - 1);
    Ok(())
}

pub(super) type EResult<T> = Result<T, EvalError>;

/// Whether the sink wants more results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Stop,
}

pub(super) type Sink<'s, 'a> = &'s mut dyn FnMut(Tok<'a>) -> EResult<Flow>;

/// How many levels descendant walks may recurse (all nested scans together) before switching to
/// a heap stack.
const RECURSION_BUDGET: u32 = 64;

/// What `$` means and how the virtual root looks.
pub(super) struct Ctx<'a> {
    /// Recursion levels of descendant walks in use.
    pub(super) depth: Cell<u32>,
    /// Steps left of [`STEP_BUDGET`].
    pub(super) steps_left: Cell<u64>,
    /// The token `$` denotes.
    pub(super) root: Tok<'a>,
    /// For a `WithMatch` scope: the event root's members (none if it is not an object) and the
    /// match.
    pub(super) overlay: Option<(Option<&'a Object>, &'a Value)>,
}

/// Members of an object or of the virtual root (root members without `matchedToken`, then
/// `matchedToken`).
pub(super) struct Members<'a> {
    iter: Option<ObjectIter<'a>>,
    skip_matched: bool,
    matched: Option<&'a Value>,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(iter) = &mut self.iter {
            for (k, v) in iter.by_ref() {
                if self.skip_matched && k == MATCHED_TOKEN {
                    continue;
                }
                return Some((k, v));
            }
            self.iter = None;
        }
        self.matched.take().map(|m| (MATCHED_TOKEN, m))
    }
}

const NO_MEMBERS: Members<'static> = Members {
    iter: None,
    skip_matched: false,
    matched: None,
};

fn object_members(object: &Object) -> Members<'_> {
    Members {
        iter: Some(object.iter()),
        skip_matched: false,
        matched: None,
    }
}

pub(super) fn members<'a>(ctx: &Ctx<'a>, tok: Tok<'a>) -> Members<'a> {
    match tok {
        Tok::Val(v) => match v.as_object() {
            Some(o) => object_members(o),
            None => NO_MEMBERS,
        },
        Tok::Obj(_, o) => object_members(o),
        Tok::Root => match ctx.overlay {
            Some((root, matched)) => Members {
                iter: root.map(Object::iter),
                skip_matched: true,
                matched: Some(matched),
            },
            None => NO_MEMBERS,
        },
        Tok::Arr(..) | Tok::Scalar(_) | Tok::Prop(..) => NO_MEMBERS,
    }
}

/// `JObject[name]`.
#[inline(always)]
pub(super) fn field<'a>(ctx: &Ctx<'a>, tok: Tok<'a>, name: &str) -> Option<Tok<'a>> {
    match tok {
        Tok::Val(v) => v.as_object()?.get(&name).map(Tok::Val),
        Tok::Obj(_, o) => o.get(&name).map(Tok::Val),
        Tok::Root => {
            let (root, matched) = ctx.overlay?;
            if name == MATCHED_TOKEN {
                Some(Tok::Val(matched))
            } else {
                root?.get(&name).map(Tok::Val)
            }
        }
        Tok::Arr(..) | Tok::Scalar(_) | Tok::Prop(..) => None,
    }
}

/// The items of an array token.
#[inline(always)]
fn items<'a>(tok: Tok<'a>) -> Option<&'a [Value]> {
    match tok {
        Tok::Val(v) => v.as_array().map(|a| a.as_slice()),
        Tok::Arr(_, items) => Some(items),
        _ => None,
    }
}

/// `PathFilter.GetTokenIndex`.
#[inline]
pub(super) fn index<'a>(tok: Tok<'a>, n: i32) -> EResult<Option<Tok<'a>>> {
    let Some(items) = items(tok) else {
        return Ok(None);
    };
    if n < 0 {
        return Err(EvalError::NegativeIndex(n));
    }
    Ok(items.get(n as usize).map(Tok::Val))
}

/// Applies a path made only of single-result steps.
#[inline]
pub(super) fn run_simple<'a>(
    ctx: &Ctx<'a>,
    steps: &[Step],
    mut tok: Tok<'a>,
) -> EResult<Option<Tok<'a>>> {
    for step in steps {
        let next = match step {
            Step::Field(name) => field(ctx, tok, name),
            Step::Index(n) => index(tok, *n)?,
            Step::Root => Some(ctx.root),
            _ => None,
        };
        match next {
            Some(t) => tok = t,
            None => return Ok(None),
        }
    }
    Ok(Some(tok))
}

/// The children Newtonsoft's `JToken` enumerates (what `[?()]` tests): array items, object
/// members, a member's value.
enum Frame<'a> {
    Members(Members<'a>),
    Items(std::slice::Iter<'a, Value>),
    One(Option<&'a Value>),
}

impl<'a> Frame<'a> {
    /// The children of a resolved token (see [`Tok::resolve`]).
    fn of(ctx: &Ctx<'a>, tok: Tok<'a>) -> Option<Frame<'a>> {
        match tok {
            Tok::Obj(_, o) => Some(Frame::Members(object_members(o))),
            Tok::Arr(_, items) => Some(Frame::Items(items.iter())),
            Tok::Prop(_, v) => Some(Frame::One(Some(v))),
            Tok::Root => Some(Frame::Members(members(ctx, tok))),
            Tok::Scalar(_) => None,
            Tok::Val(_) => Frame::of(ctx, tok.resolve()),
        }
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        match self {
            Frame::Members(m) => m.next().map(|(k, v)| Tok::Prop(k, v)),
            Frame::Items(items) => items.next().map(Tok::Val),
            Frame::One(v) => v.take().map(Tok::Val),
        }
    }
}

/// Pre-order walk over the descendants of a token (members included) on a heap stack: what
/// [`descend`] continues with once the recursion budget is spent.
struct Walker<'c, 'a> {
    ctx: &'c Ctx<'a>,
    stack: Vec<Frame<'a>>,
}

impl<'c, 'a> Walker<'c, 'a> {
    /// A walk over the descendants of `start` (not `start` itself).
    fn new(ctx: &'c Ctx<'a>, start: Tok<'a>) -> Walker<'c, 'a> {
        let mut stack = Vec::new();
        if let Some(frame) = Frame::of(ctx, start.resolve()) {
            stack.reserve(8);
            stack.push(frame);
        }
        Walker { ctx, stack }
    }
}

impl<'a> Iterator for Walker<'_, 'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        let tok = loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                Some(tok) => break tok.resolve(),
                None => {
                    self.stack.pop();
                }
            }
        };
        if let Some(frame) = Frame::of(self.ctx, tok) {
            self.stack.push(frame);
        }
        Some(tok)
    }
}

/// Visits the descendants of a resolved token in pre-order (members, then their values), like
/// Newtonsoft's `Descendants()`; every visited token is resolved.
fn descend<'a, F>(ctx: &Ctx<'a>, tok: Tok<'a>, f: &mut F) -> EResult<Flow>
where
    F: FnMut(Tok<'a>) -> EResult<Flow>,
{
    let depth = ctx.depth.get();
    if depth >= RECURSION_BUDGET {
        for d in Walker::new(ctx, tok) {
            if f(d)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        return Ok(Flow::Continue);
    }
    ctx.depth.set(depth + 1);
    let result = descend_children(ctx, tok, f);
    ctx.depth.set(depth);
    result
}

fn descend_children<'a, F>(ctx: &Ctx<'a>, tok: Tok<'a>, f: &mut F) -> EResult<Flow>
where
    F: FnMut(Tok<'a>) -> EResult<Flow>,
{
    spend(ctx)?;
    match tok {
        Tok::Obj(_, o) => {
            for (k, v) in o.iter() {
                if descend_member(ctx, k, v, f)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
        Tok::Root => {
            for (k, v) in members(ctx, tok) {
                if descend_member(ctx, k, v, f)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
        Tok::Arr(_, items) => {
            for v in items {
                if descend_value(ctx, v, f)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
        Tok::Prop(_, v) => return descend_value(ctx, v, f),
        Tok::Scalar(_) => {}
        Tok::Val(_) => return descend_children(ctx, tok.resolve(), f),
    }
    Ok(Flow::Continue)
}

#[inline(always)]
fn descend_member<'a, F>(ctx: &Ctx<'a>, name: &'a str, v: &'a Value, f: &mut F) -> EResult<Flow>
where
    F: FnMut(Tok<'a>) -> EResult<Flow>,
{
    if f(Tok::Prop(name, v))? == Flow::Stop {
        return Ok(Flow::Stop);
    }
    descend_value(ctx, v, f)
}

#[inline(always)]
fn descend_value<'a, F>(ctx: &Ctx<'a>, v: &'a Value, f: &mut F) -> EResult<Flow>
where
    F: FnMut(Tok<'a>) -> EResult<Flow>,
{
    let child = Tok::Val(v).resolve();
    if f(child)? == Flow::Stop {
        return Ok(Flow::Stop);
    }
    match child {
        Tok::Scalar(_) => Ok(Flow::Continue),
        _ => descend(ctx, child, f),
    }
}

/// `ArraySliceFilter` bounds for an array of `len` items: the indexes to yield, in order.
fn slice_indexes(slice: Slice, len: usize) -> impl Iterator<Item = usize> {
    let count = len as i64;
    let step = i64::from(slice.step.unwrap_or(1));
    let positive = step > 0;
    let mut start = slice
        .start
        .map_or(if positive { 0 } else { count - 1 }, i64::from);
    let mut stop = slice
        .end
        .map_or(if positive { count } else { -1 }, i64::from);
    if slice.start.is_some_and(|s| s < 0) {
        start += count;
    }
    if slice.end.is_some_and(|e| e < 0) {
        stop += count;
    }
    start = start.max(if positive { 0 } else { i64::MIN });
    start = start.min(if positive { count } else { count - 1 });
    stop = stop.max(-1).min(count);
    let valid = move |i: i64| if positive { i < stop } else { i > stop };
    let mut i = start;
    std::iter::from_fn(move || {
        if step == 0 || !valid(i) {
            return None;
        }
        let current = i;
        i += step;
        usize::try_from(current).ok()
    })
}

/// Follows `steps` from `tok`, handing every result to `sink` in Newtonsoft's order.
pub(super) fn run<'a>(
    ctx: &Ctx<'a>,
    steps: &[Step],
    mut tok: Tok<'a>,
    sink: Sink<'_, 'a>,
) -> EResult<Flow> {
    spend(ctx)?;
    let mut i = 0;
    while i < steps.len() {
        let rest = &steps[i + 1..];
        match &steps[i] {
            Step::Field(name) => match field(ctx, tok, name) {
                Some(t) => tok = t,
                None => return Ok(Flow::Continue),
            },
            Step::Index(n) => match index(tok, *n)? {
                Some(t) => tok = t,
                None => return Ok(Flow::Continue),
            },
            Step::Root => tok = ctx.root,
            Step::AllFields => {
                for (_, v) in members(ctx, tok) {
                    if run(ctx, rest, Tok::Val(v), sink)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                return Ok(Flow::Continue);
            }
            Step::Fields(names) => {
                for name in names {
                    if let Some(t) = field(ctx, tok, name)
                        && run(ctx, rest, t, sink)? == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                }
                return Ok(Flow::Continue);
            }
            Step::AllIndexes => {
                if let Some(items) = items(tok) {
                    for item in items {
                        if run(ctx, rest, Tok::Val(item), sink)? == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                return Ok(Flow::Continue);
            }
            Step::Indexes(list) => {
                for &n in list {
                    if let Some(t) = index(tok, n)?
                        && run(ctx, rest, t, sink)? == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                }
                return Ok(Flow::Continue);
            }
            Step::Slice(slice) => {
                if let Some(items) = items(tok) {
                    for k in slice_indexes(*slice, items.len()) {
                        if let Some(item) = items.get(k)
                            && run(ctx, rest, Tok::Val(item), sink)? == Flow::Stop
                        {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                return Ok(Flow::Continue);
            }
            Step::Scan(name) => {
                let name: &str = name;
                return descend(ctx, tok.resolve(), &mut |d| match d {
                    Tok::Prop(k, v) if k == name => run(ctx, rest, Tok::Val(v), sink),
                    _ => Ok(Flow::Continue),
                });
            }
            Step::ScanAll => {
                let tok = tok.resolve();
                if run(ctx, rest, tok, sink)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                return descend(ctx, tok, &mut |d| match d {
                    Tok::Prop(..) => Ok(Flow::Continue),
                    _ => run(ctx, rest, d, sink),
                });
            }
            Step::ScanFields(names) => {
                return descend(ctx, tok.resolve(), &mut |d| {
                    if let Tok::Prop(k, v) = d {
                        for name in names {
                            if k == &**name && run(ctx, rest, Tok::Val(v), sink)? == Flow::Stop {
                                return Ok(Flow::Stop);
                            }
                        }
                    }
                    Ok(Flow::Continue)
                });
            }
            Step::Filter(filter) => {
                if let Some(mut children) = Frame::of(ctx, tok.resolve()) {
                    while let Some(child) = children.next() {
                        if passes(ctx, filter, child)? && run(ctx, rest, child, sink)? == Flow::Stop
                        {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                return Ok(Flow::Continue);
            }
            Step::ScanFilter(filter) => {
                let mut visit = |d: Tok<'a>| -> EResult<Flow> {
                    if passes(ctx, filter, d)? {
                        run(ctx, rest, d, sink)
                    } else {
                        Ok(Flow::Continue)
                    }
                };
                let tok = tok.resolve();
                if visit(tok)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                return descend(ctx, tok, &mut visit);
            }
        }
        i += 1;
    }
    sink(tok)
}

/// Whether a token passes a filter (kinds the filter cannot accept are not evaluated).
#[inline(always)]
fn passes<'a>(ctx: &Ctx<'a>, filter: &Filter, tok: Tok<'a>) -> EResult<bool> {
    if filter.accepts & tok.kind() == 0 {
        return Ok(false);
    }
    test(ctx, &filter.expr, tok)
}

/// `QueryExpression.IsMatch`.
pub(super) fn test<'a>(ctx: &Ctx<'a>, expr: &Expr, tok: Tok<'a>) -> EResult<bool> {
    match expr {
        Expr::And(items) => {
            for item in items {
                if !test(ctx, item, tok)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Expr::Or(items) => {
            for item in items {
                if test(ctx, item, tok)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Expr::Exists(Operand::Lit(_)) => Ok(true),
        Expr::Exists(Operand::Path(path)) => exists(ctx, path, tok),
        Expr::Cmp(cmp) => compare(ctx, cmp, tok),
    }
}

#[inline]
fn exists<'a>(ctx: &Ctx<'a>, path: &SubPath, tok: Tok<'a>) -> EResult<bool> {
    if path.simple {
        return Ok(run_simple(ctx, &path.steps, tok)?.is_some());
    }
    let mut found = false;
    run(ctx, &path.steps, tok, &mut |_| {
        found = true;
        Ok(Flow::Stop)
    })?;
    Ok(found)
}

/// The right side's tokens, all of them (Newtonsoft materializes them once per test, and only
/// when the left side yields something).
enum Values<'x> {
    One(Jv<'x>),
    Many(Vec<Jv<'x>>),
}

impl<'x> Values<'x> {
    fn as_slice(&self) -> &[Jv<'x>] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
        }
    }
}

fn values<'x, 'a: 'x>(ctx: &Ctx<'a>, operand: &'x Operand, tok: Tok<'a>) -> EResult<Values<'x>> {
    match operand {
        Operand::Lit(lit) => Ok(Values::One(Jv::of_lit(lit))),
        Operand::Path(path) if path.simple => Ok(match run_simple(ctx, &path.steps, tok)? {
            Some(t) => Values::One(Jv::of_token(t)),
            None => Values::Many(Vec::new()),
        }),
        Operand::Path(path) => {
            let mut out = Vec::new();
            run(ctx, &path.steps, tok, &mut |t| {
                out.push(Jv::of_token(t));
                Ok(Flow::Continue)
            })?;
            Ok(Values::Many(out))
        }
    }
}

/// `BooleanQueryExpression.IsMatch` for a binary operator: true if any (left, right) pair
/// matches; the left side is enumerated lazily, the right side once.
fn compare<'a>(ctx: &Ctx<'a>, cmp: &Cmp, tok: Tok<'a>) -> EResult<bool> {
    let regex = cmp.regex.as_ref();
    let mut right: Option<Values<'_>> = None;
    let mut hit = false;
    let mut on_left = |left: Jv<'_>| -> EResult<Flow> {
        if right.is_none() {
            right = Some(values(ctx, &cmp.right, tok)?);
        }
        if let Some(right) = &right {
            for &r in right.as_slice() {
                if matches(cmp.op, left, r, regex)? {
                    hit = true;
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Continue)
    };
    match &cmp.left {
        Operand::Lit(lit) => {
            on_left(Jv::of_lit(lit))?;
        }
        Operand::Path(path) if path.simple => {
            if let Some(t) = run_simple(ctx, &path.steps, tok)? {
                on_left(Jv::of_token(t))?;
            }
        }
        Operand::Path(path) => {
            run(ctx, &path.steps, tok, &mut |t| on_left(Jv::of_token(t)))?;
        }
    }
    Ok(hit)
}
