//! Tree-walking evaluation.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use super::ast::{Cmp, Kind, Node};
use super::error::{RtError, RtKind, RtResult};
use super::functions;
use super::value::{Arr, JStr, JValue, View, deep_eq, from_lit, order};

/// How many evaluation steps one evaluation may take. Mappings need tens; the budget stops an
/// expression whose nested projections multiply the work from stalling the pipeline.
pub(crate) const STEP_BUDGET: u64 = 500_000;

thread_local! {
    static STEPS_LEFT: Cell<u64> = const { Cell::new(STEP_BUDGET) };
}

/// Starts a new evaluation's step budget. Every public entry point calls it first.
pub(crate) fn reset_budget() {
    STEPS_LEFT.with(|s| s.set(STEP_BUDGET));
}

fn spend_step() -> RtResult<()> {
    spend_steps(1)
}

/// Spends `n` steps: one per node evaluated and one per element copied into a new list.
fn spend_steps(n: usize) -> RtResult<()> {
    STEPS_LEFT.with(|s| {
        let left = s.get();
        let n = n as u64;
        if left < n {
            s.set(0);
            return Err(RtKind::TooMuchWork.into());
        }
        s.set(left - n);
        Ok(())
    })
}

/// Evaluates `node` against `cur`.
pub(crate) fn eval<'a>(node: &Node, cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    spend_step()?;
    Ok(match &node.kind {
        Kind::Current => cur.clone(),
        Kind::Field(name) => cur.field(name),
        Kind::Path(names) => {
            // `field` of anything but an object is null, so no null checks are needed.
            let mut v = cur.field(&names[0]);
            for name in &names[1..] {
                v = v.field(name);
            }
            v
        }
        Kind::Sub(lhs, rhs) => {
            let left = eval(lhs, cur)?;
            // JmesPath.Net's compound expressions stop at null (a pipe does not).
            if left.is_null() {
                return Ok(JValue::Null);
            }
            eval(rhs, &left)?
        }
        Kind::Pipe(lhs, rhs) => {
            let left = eval(lhs, cur)?;
            eval(rhs, &left)?
        }
        Kind::Index(i) => match cur.view() {
            View::Array(a) => index(a, *i).unwrap_or(JValue::Null),
            _ => JValue::Null,
        },
        Kind::Slice { start, stop, step } => match cur.view() {
            View::Array(a) => JValue::Array(Rc::new(slice(a, *start, *stop, *step))),
            _ => JValue::Null,
        },
        Kind::Projection(lhs, rhs) => project(lhs, rhs, cur)?,
        Kind::ValueProjection(lhs, rhs) => project_values(lhs, rhs, cur)?,
        Kind::Filter { lhs, cond, rhs } => filter(lhs, cond, rhs, cur)?,
        Kind::Flatten(inner) => flatten(inner, cur)?,
        Kind::Or(lhs, rhs) => {
            let left = eval(lhs, cur)?;
            if left.is_truthy() {
                left
            } else {
                eval(rhs, cur)?
            }
        }
        Kind::And(lhs, rhs) => {
            let left = eval(lhs, cur)?;
            if left.is_truthy() {
                eval(rhs, cur)?
            } else {
                left
            }
        }
        Kind::Not(inner) => JValue::Bool(!eval(inner, cur)?.is_truthy()),
        Kind::Compare(op, lhs, rhs) => compare(*op, lhs, rhs, cur)?,
        Kind::Literal(lit) => from_lit(lit),
        Kind::MultiList(items) => multi_list(items, cur)?,
        Kind::MultiHash(items) => multi_hash(items, cur)?,
        Kind::Call(func, args) => functions::call(*func, args, cur)?,
        Kind::ExpRef(inner) => eval(inner, cur)?,
    })
}

/// Evaluates `node` and tells whether the result is a projection (a list of matches) in
/// JmesPath.Net's sense.
pub(crate) fn eval_top<'a>(node: &Node, cur: &JValue<'a>) -> RtResult<(JValue<'a>, bool)> {
    match &node.kind {
        Kind::Or(lhs, rhs) => {
            let (left, projection) = eval_top(lhs, cur)?;
            if left.is_truthy() {
                Ok((left, projection))
            } else {
                eval_top(rhs, cur)
            }
        }
        Kind::And(lhs, rhs) => {
            let (left, projection) = eval_top(lhs, cur)?;
            if left.is_truthy() {
                eval_top(rhs, cur)
            } else {
                Ok((left, projection))
            }
        }
        Kind::Sub(lhs, rhs) => {
            let left = eval(lhs, cur)?;
            if left.is_null() {
                return Ok((JValue::Null, false));
            }
            eval_top(rhs, &left)
        }
        Kind::Pipe(lhs, rhs) => {
            let left = eval(lhs, cur)?;
            eval_top(rhs, &left)
        }
        Kind::ExpRef(inner) => eval_top(inner, cur),
        _ => {
            let value = eval(node, cur)?;
            let projection = node.is_projection() && !value.is_null();
            Ok((value, projection))
        }
    }
}

fn index<'a>(a: Arr<'_, 'a>, i: i64) -> Option<JValue<'a>> {
    let len = a.len() as i64;
    let i = if i < 0 { len.checked_add(i)? } else { i };
    if i < 0 || i >= len {
        return None;
    }
    a.get(usize::try_from(i).ok()?)
}

fn slice<'a>(a: Arr<'_, 'a>, start: Option<i64>, stop: Option<i64>, step: i64) -> Vec<JValue<'a>> {
    let len = a.len() as i64;
    let cap = |v: i64| -> i64 {
        if v < 0 {
            let v = v.saturating_add(len);
            if v < 0 {
                if step < 0 { -1 } else { 0 }
            } else {
                v
            }
        } else if v >= len {
            if step < 0 { len - 1 } else { len }
        } else {
            v
        }
    };
    let start = match start {
        Some(s) => cap(s),
        None => {
            if step < 0 {
                len - 1
            } else {
                0
            }
        }
    };
    let stop = match stop {
        Some(s) => cap(s),
        None => {
            if step < 0 {
                -1
            } else {
                len
            }
        }
    };
    let mut out = Vec::new();
    let mut i = start;
    if step > 0 {
        while i < stop {
            if let Some(v) = a.get(i as usize) {
                out.push(v);
            }
            i = match i.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    } else {
        while i > stop {
            if let Some(v) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                out.push(v);
            }
            i = match i.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    out
}

fn compare<'a>(op: Cmp, lhs: &Node, rhs: &Node, cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let left = eval(lhs, cur)?;
    let right = eval(rhs, cur)?;
    let (left, right) = (&left, &right);
    Ok(match op {
        Cmp::Eq => JValue::Bool(deep_eq(left, right, 0)?),
        Cmp::Ne => JValue::Bool(!deep_eq(left, right, 0)?),
        _ => match order(left, right) {
            None => JValue::Null,
            Some(ord) => JValue::Bool(match op {
                Cmp::Lt => ord == Less,
                Cmp::Le => ord != Greater,
                Cmp::Gt => ord == Greater,
                Cmp::Ge => ord != Less,
                Cmp::Eq | Cmp::Ne => ord == Equal,
            }),
        },
    })
}

fn project<'a>(lhs: &Node, rhs: &Node, cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    let base = eval(lhs, cur)?;
    let View::Array(a) = base.view() else {
        return Ok(JValue::Null);
    };
    let mut total = 0usize;
    a.try_for_each::<()>(|item| {
        total += match item.view() {
            View::Array(nested) => nested.len(),
            _ => 1,
        };
        Ok(())
    })
    .ok();
    spend_steps(total)?;
    let mut out = Vec::with_capacity(total);
    if let Kind::Current = rhs.kind {
        a.try_for_each::<()>(|item| {
            if !item.is_null() {
                out.push(item);
            }
            Ok(())
        })
        .ok();
    } else {
        a.try_for_each::<RtError>(|item| {
            let v = eval(rhs, &item)?;
            if !v.is_null() {
                out.push(v);
            }
            Ok(())
        })?;
    }
    Ok(JValue::Array(Rc::new(out)))
}

fn project_values<'a>(lhs: &Node, rhs: &Node, cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    let base = eval(lhs, cur)?;
    let View::Object(o) = base.view() else {
        return Ok(JValue::Null);
    };
    let mut out = Vec::with_capacity(o.len());
    for (_, item) in o.entries() {
        let v = eval(rhs, &item)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(JValue::Array(Rc::new(out)))
}

fn filter<'a>(lhs: &Node, cond: &Node, rhs: &Node, cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    let base = eval(lhs, cur)?;
    let View::Array(a) = base.view() else {
        return Ok(JValue::Null);
    };
    let mut out = Vec::new();
    a.try_for_each::<RtError>(|item| {
        if eval(cond, &item)?.is_truthy() {
            let v = eval(rhs, &item)?;
            if !v.is_null() {
                out.push(v);
            }
        }
        Ok(())
    })?;
    Ok(JValue::Array(Rc::new(out)))
}

fn flatten<'a>(inner: &Node, cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    let base = eval(inner, cur)?;
    let View::Array(a) = base.view() else {
        return Ok(JValue::Null);
    };
    let mut total = 0usize;
    a.try_for_each::<()>(|item| {
        total += match item.view() {
            View::Array(nested) => nested.len(),
            _ => 1,
        };
        Ok(())
    })
    .ok();
    spend_steps(total)?;
    let mut out = Vec::with_capacity(total);
    a.try_for_each::<()>(|item| {
        match item.view() {
            View::Array(nested) => {
                nested.try_for_each::<()>(|x| {
                    out.push(x);
                    Ok(())
                })?;
            }
            _ => out.push(item.clone()),
        }
        Ok(())
    })
    .ok();
    Ok(JValue::Array(Rc::new(out)))
}

fn multi_list<'a>(items: &[Node], cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    if cur.is_null() {
        return Ok(JValue::Null);
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(eval(item, cur)?);
    }
    Ok(JValue::Array(Rc::new(out)))
}

fn multi_hash<'a>(items: &[(Arc<str>, Node)], cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    if cur.is_null() {
        return Ok(JValue::Null);
    }
    let mut out = Vec::with_capacity(items.len());
    for (key, item) in items {
        out.push((JStr::Shared(key.clone()), eval(item, cur)?));
    }
    Ok(JValue::Object(Rc::new(out)))
}
