//! Built-in JMESPath functions (with JmesPath.Net 1.0.205's typing) and the original
//! connector's eight custom functions.

use std::cmp::Ordering;
use std::rc::Rc;

use chrono::DateTime;

use super::ast::{Kind, Node};
use super::dotnet;
use super::error::{RtError, RtResult};
use super::interp::eval;
use super::value::{Arr, JStr, JValue, MAX_VALUE_DEPTH, Obj, TokenType, View, deep_eq};

/// A function known to the compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Abs,
    Avg,
    Ceil,
    Contains,
    EndsWith,
    Floor,
    Join,
    Keys,
    Length,
    Map,
    Max,
    MaxBy,
    Merge,
    Min,
    MinBy,
    NotNull,
    Reverse,
    Sort,
    SortBy,
    StartsWith,
    Sum,
    ToArray,
    ToString,
    ToNumber,
    Type,
    Values,
    Add,
    Subtract,
    Multiply,
    Divide,
    Pow,
    InsertString,
    FromUnixTimestamp,
    FromUnixTimestampMs,
}

/// Name, function, minimum argument count, variadic.
const TABLE: &[(&str, Func, usize, bool)] = &[
    ("abs", Func::Abs, 1, false),
    ("avg", Func::Avg, 1, false),
    ("ceil", Func::Ceil, 1, false),
    ("contains", Func::Contains, 2, false),
    ("ends_with", Func::EndsWith, 2, false),
    ("floor", Func::Floor, 1, false),
    ("join", Func::Join, 2, false),
    ("keys", Func::Keys, 1, false),
    ("length", Func::Length, 1, false),
    ("map", Func::Map, 2, false),
    ("max", Func::Max, 1, false),
    ("max_by", Func::MaxBy, 2, false),
    ("merge", Func::Merge, 1, true),
    ("min", Func::Min, 1, false),
    ("min_by", Func::MinBy, 2, false),
    ("not_null", Func::NotNull, 1, true),
    ("reverse", Func::Reverse, 1, false),
    ("sort", Func::Sort, 1, false),
    ("sort_by", Func::SortBy, 2, false),
    ("starts_with", Func::StartsWith, 2, false),
    ("sum", Func::Sum, 1, false),
    ("to_array", Func::ToArray, 1, false),
    ("to_string", Func::ToString, 1, false),
    ("to_number", Func::ToNumber, 1, false),
    ("type", Func::Type, 1, false),
    ("values", Func::Values, 1, false),
    ("add", Func::Add, 2, false),
    ("subtract", Func::Subtract, 2, false),
    ("multiply", Func::Multiply, 2, false),
    ("divide", Func::Divide, 2, false),
    ("pow", Func::Pow, 2, false),
    ("insertString", Func::InsertString, 3, false),
    ("fromUnixTimestamp", Func::FromUnixTimestamp, 1, false),
    ("fromUnixTimestampMs", Func::FromUnixTimestampMs, 1, false),
];

impl Func {
    /// The function registered under `name` (case-sensitive).
    pub(crate) fn lookup(name: &str) -> Option<Func> {
        TABLE.iter().find(|(n, ..)| *n == name).map(|(_, f, ..)| *f)
    }

    fn entry(self) -> &'static (&'static str, Func, usize, bool) {
        TABLE
            .iter()
            .find(|(_, f, ..)| *f == self)
            .unwrap_or(&TABLE[0])
    }

    pub(crate) fn name(self) -> &'static str {
        self.entry().0
    }

    /// Minimum number of arguments and whether more are allowed.
    pub(crate) fn arity(self) -> (usize, bool) {
        let e = self.entry();
        (e.2, e.3)
    }
}

/// The names of all functions, built-in and custom.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(n, ..)| *n)
}

/// An evaluated argument.
enum Arg<'n, 'a> {
    Val(JValue<'a>),
    Expr(&'n Node),
}

/// Calls `func` with the arguments `nodes` evaluated against `cur`.
pub(crate) fn call<'a>(func: Func, nodes: &[Node], cur: &JValue<'a>) -> RtResult<JValue<'a>> {
    fn eval_arg<'n, 'a>(node: &'n Node, cur: &JValue<'a>) -> RtResult<Arg<'n, 'a>> {
        Ok(match &node.kind {
            Kind::ExpRef(inner) => Arg::Expr(inner),
            _ => Arg::Val(eval(node, cur)?),
        })
    }
    if nodes.len() <= 3 {
        let mut buf = [
            Arg::Val(JValue::Null),
            Arg::Val(JValue::Null),
            Arg::Val(JValue::Null),
        ];
        for (slot, node) in buf.iter_mut().zip(nodes) {
            *slot = eval_arg(node, cur)?;
        }
        Call {
            func,
            args: &buf[..nodes.len()],
        }
        .run()
    } else {
        let args = nodes
            .iter()
            .map(|n| eval_arg(n, cur))
            .collect::<RtResult<Vec<_>>>()?;
        Call { func, args: &args }.run()
    }
}

struct Call<'c, 'n, 'a> {
    func: Func,
    args: &'c [Arg<'n, 'a>],
}

/// Types the custom functions check with `ValidatePositionalArgument`.
const NUMBER: &[TokenType] = &[TokenType::Integer, TokenType::Float];
const STRING: &[TokenType] = &[TokenType::String];
const INTEGER: &[TokenType] = &[TokenType::Integer];

impl<'c, 'n, 'a> Call<'c, 'n, 'a> {
    fn name(&self) -> &'static str {
        self.func.name()
    }

    fn type_error(&self, what: String) -> RtError {
        RtError::invalid_type(self.name(), format!("Error: invalid-type, {what}"))
    }

    fn val(&self, i: usize) -> RtResult<&'c JValue<'a>> {
        match self.args.get(i) {
            Some(Arg::Val(v)) => Ok(v),
            _ => Err(self.type_error(format!(
                "unexpected expression type as a parameter to the function {}.",
                self.name()
            ))),
        }
    }

    fn expr(&self, i: usize) -> Option<&'n Node> {
        match self.args.get(i) {
            Some(Arg::Expr(node)) => Some(node),
            _ => None,
        }
    }

    fn array(&self, i: usize) -> RtResult<Arr<'c, 'a>> {
        match self.val(i)?.view() {
            View::Array(a) => Ok(a),
            _ => Err(self.type_error(format!("function {} expects an array.", self.name()))),
        }
    }

    fn object(&self, i: usize) -> RtResult<Obj<'c, 'a>> {
        match self.val(i)?.view() {
            View::Object(o) => Ok(o),
            _ => Err(self.type_error(format!("function {} expects an object.", self.name()))),
        }
    }

    fn numbers(&self, i: usize) -> RtResult<&'c JValue<'a>> {
        let v = self.val(i)?;
        if v.number().is_none() {
            return Err(self.type_error(format!("function {} only accepts numbers.", self.name())));
        }
        Ok(v)
    }

    /// `EnsureArrayOf(arg, "number")`.
    fn array_of_numbers(&self, i: usize) -> RtResult<Vec<JValue<'a>>> {
        let items = self.array(i)?.to_vec();
        if items.iter().any(|v| v.number().is_none()) {
            return Err(self.type_error(format!(
                "function {} expects an array of number.",
                self.name()
            )));
        }
        Ok(items)
    }

    /// `EnsureArrayOfSame(arg, types)`: one JMESPath type for all items, among `types` (if
    /// any are given).
    fn array_of_same(&self, i: usize, types: &[&str]) -> RtResult<(Vec<JValue<'a>>, &'static str)> {
        let items = self.array(i)?.to_vec();
        let first = items
            .first()
            .map_or("none", |v| v.token_type().jmespath_name());
        if items
            .iter()
            .any(|v| v.token_type().jmespath_name() != first)
        {
            return Err(self.type_error(format!(
                "all items in the array to the function {} must have the same type.",
                self.name()
            )));
        }
        if !types.is_empty() && !items.is_empty() && !types.contains(&first) {
            return Err(self.type_error(format!(
                "function {} expects an array of {}.",
                self.name(),
                types.join(" or ")
            )));
        }
        Ok((items, first))
    }

    /// The original's `ValidatePositionalArgument`.
    fn positional(&self, pos: usize, types: &[TokenType]) -> RtResult<&'c JValue<'a>> {
        let v = self.val(pos)?;
        if !types.contains(&v.token_type()) {
            let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
            return Err(RtError::invalid_type(
                self.name(),
                format!(
                    "Error: invalid-type, function {} expects argument {pos} to be one of the following: {}",
                    self.name(),
                    names.join("|")
                ),
            ));
        }
        Ok(v)
    }

    /// `Value<long>()` of an Integer token.
    fn long(&self, v: &JValue<'a>) -> RtResult<i64> {
        match v.view() {
            View::Int(i) => Ok(i),
            View::UInt(u) => Err(RtError::overflow(
                self.name(),
                format!(
                    "function {}: the integer {u} does not fit a 64-bit signed integer",
                    self.name()
                ),
            )),
            _ => Ok(v.number().unwrap_or(0.0) as i64),
        }
    }

    fn run(&self) -> RtResult<JValue<'a>> {
        match self.func {
            Func::Abs => self.abs(),
            Func::Avg => self.avg(),
            Func::Ceil | Func::Floor => self.ceil_floor(),
            Func::Contains => self.contains(),
            Func::StartsWith | Func::EndsWith => self.starts_ends_with(),
            Func::Join => self.join(),
            Func::Keys | Func::Values => self.keys_values(),
            Func::Length => self.length(),
            Func::Map => self.map(),
            Func::Max | Func::Min => self.min_max(),
            Func::MaxBy | Func::MinBy => self.min_max_by(),
            Func::Merge => self.merge(),
            Func::NotNull => self.not_null(),
            Func::Reverse => self.reverse(),
            Func::Sort => self.sort(),
            Func::SortBy => self.sort_by(),
            Func::Sum => self.sum(),
            Func::ToArray => self.to_array(),
            Func::ToString => self.to_string(),
            Func::ToNumber => self.to_number(),
            Func::Type => {
                let name = self.val(0)?.token_type().jmespath_name();
                Ok(JValue::Str(JStr::Shared(name.into())))
            }
            Func::Add | Func::Subtract | Func::Multiply | Func::Divide | Func::Pow => {
                self.arithmetic()
            }
            Func::InsertString => self.insert_string(),
            Func::FromUnixTimestamp | Func::FromUnixTimestampMs => self.unix_timestamp(),
        }
    }

    fn avg(&self) -> RtResult<JValue<'a>> {
        let items = self.array_of_numbers(0)?;
        if items.is_empty() {
            return Ok(JValue::Null);
        }
        let sum: f64 = items.iter().filter_map(JValue::number).sum();
        Ok(JValue::Float(sum / items.len() as f64))
    }

    fn ceil_floor(&self) -> RtResult<JValue<'a>> {
        let f = self.numbers(0)?.number().unwrap_or(0.0);
        let r = if self.func == Func::Ceil {
            f.ceil()
        } else {
            f.floor()
        };
        dotnet::to_int64(r).map(JValue::Int).ok_or_else(|| {
            RtError::overflow(
                self.name(),
                format!(
                    "function {}: {} does not fit a 64-bit signed integer",
                    self.name(),
                    dotnet::double_to_string(r)
                ),
            )
        })
    }

    fn keys_values(&self) -> RtResult<JValue<'a>> {
        let entries = self.object(0)?.entries();
        let keys = self.func == Func::Keys;
        Ok(JValue::Array(Rc::new(
            entries
                .into_iter()
                .map(|(k, v)| if keys { JValue::Str(k) } else { v })
                .collect(),
        )))
    }

    fn length(&self) -> RtResult<JValue<'a>> {
        let v = self.val(0)?;
        match v.view() {
            View::Array(a) => Ok(JValue::Int(a.len() as i64)),
            View::Object(o) => Ok(JValue::Int(o.len() as i64)),
            _ => match v.string_value() {
                Some(s) => Ok(JValue::Int(dotnet::utf16_len(&s) as i64)),
                None => Err(self.type_error(format!(
                    "function {} expects either an object, an array or a string.",
                    self.name()
                ))),
            },
        }
    }

    fn not_null(&self) -> RtResult<JValue<'a>> {
        for i in 0..self.args.len() {
            let v = self.val(i)?;
            if !v.is_null() {
                return Ok(v.clone());
            }
        }
        Ok(JValue::Null)
    }

    fn reverse(&self) -> RtResult<JValue<'a>> {
        let v = self.val(0)?;
        if let View::Array(a) = v.view() {
            let mut items = a.to_vec();
            items.reverse();
            return Ok(JValue::Array(Rc::new(items)));
        }
        match v.string_value() {
            Some(s) => Ok(JValue::Str(s.chars().rev().collect::<String>().into())),
            None => Err(self.type_error(format!(
                "function {} accepts either an array or a string.",
                self.name()
            ))),
        }
    }

    fn sum(&self) -> RtResult<JValue<'a>> {
        let items = self.array_of_numbers(0)?;
        if items.is_empty() {
            return Ok(JValue::Int(0));
        }
        let sum: f64 = items.iter().filter_map(JValue::number).sum();
        // `IsInteger(sum)`: |sum % 1| <= double.Epsilon * 100
        if sum.is_finite() && (sum % 1.0).abs() <= f64::from_bits(1) * 100.0 {
            dotnet::to_int64(sum).map(JValue::Int).ok_or_else(|| {
                RtError::overflow(
                    self.name(),
                    format!(
                        "function sum: the integral sum {} does not fit a 64-bit signed integer",
                        dotnet::double_to_string(sum)
                    ),
                )
            })
        } else {
            Ok(JValue::Float(sum))
        }
    }

    fn to_array(&self) -> RtResult<JValue<'a>> {
        let v = self.val(0)?;
        Ok(match v.view() {
            View::Array(_) => v.clone(),
            _ => JValue::Array(Rc::new(vec![v.clone()])),
        })
    }

    fn to_string(&self) -> RtResult<JValue<'a>> {
        let v = self.val(0)?;
        Ok(match v.view() {
            View::Str(_) | View::Date(_) => v.clone(),
            _ => JValue::Str(v.to_json()?.into()),
        })
    }

    fn to_number(&self) -> RtResult<JValue<'a>> {
        let v = self.val(0)?;
        Ok(match v.view() {
            View::Int(_) | View::UInt(_) | View::Float(_) => v.clone(),
            View::Str(s) => {
                if let Some(i) = dotnet::parse_int64(s) {
                    JValue::Int(i)
                } else if let Some(f) = dotnet::parse_double(s) {
                    JValue::Float(f)
                } else {
                    JValue::Null
                }
            }
            _ => JValue::Null,
        })
    }

    fn abs(&self) -> RtResult<JValue<'a>> {
        let v = self.numbers(0)?;
        match v.view() {
            // `Math.Abs(token.Value<int>())`: 32-bit.
            View::Int(i) => match i32::try_from(i).ok().and_then(i32::checked_abs) {
                Some(a) => Ok(JValue::Int(i64::from(a))),
                None => Err(RtError::overflow(
                    self.name(),
                    format!(
                        "function abs: the integer {i} is outside the 32-bit range the original supports"
                    ),
                )),
            },
            View::UInt(u) => Err(RtError::overflow(
                self.name(),
                format!(
                    "function abs: the integer {u} is outside the 32-bit range the original supports"
                ),
            )),
            _ => Ok(JValue::Float(v.number().unwrap_or(0.0).abs())),
        }
    }

    fn contains(&self) -> RtResult<JValue<'a>> {
        let subject = self.val(0)?;
        let search = self.val(1)?;
        match subject.view() {
            View::Array(a) => {
                let mut found = false;
                let mut err = None;
                a.try_for_each::<()>(|item| {
                    match deep_eq(&item, search, 0) {
                        Ok(true) => found = true,
                        Ok(false) => {}
                        Err(e) => err = Some(e),
                    }
                    if found || err.is_some() {
                        Err(())
                    } else {
                        Ok(())
                    }
                })
                .ok();
                match err {
                    Some(e) => Err(e),
                    None => Ok(JValue::Bool(found)),
                }
            }
            View::Str(s) => {
                // `subject.Contains(search.Value<string>())`
                let needle = match search.view() {
                    View::Str(n) => n.to_owned(),
                    View::Date(d) => dotnet::date_string(&d),
                    View::Int(i) => i.to_string(),
                    View::UInt(u) => u.to_string(),
                    View::Float(f) => dotnet::double_to_string(f),
                    View::Bool(b) => if b { "True" } else { "False" }.to_owned(),
                    _ => {
                        return Err(self.type_error(format!(
                            "function {} can only search a string for a string, number or boolean.",
                            self.name()
                        )));
                    }
                };
                Ok(JValue::Bool(s.contains(needle.as_str())))
            }
            // A Date token is a "string" to validation but not searched by the original.
            View::Date(_) => Ok(JValue::Bool(false)),
            _ => Err(self.type_error(format!(
                "function {} expects either an array or a string.",
                self.name()
            ))),
        }
    }

    fn starts_ends_with(&self) -> RtResult<JValue<'a>> {
        let text = self.val(0)?.string_value();
        let pattern = self.val(1)?.string_value();
        let (Some(text), Some(pattern)) = (text, pattern) else {
            return Err(self.type_error(format!(
                "both arguments to function {} must be strings.",
                self.name()
            )));
        };
        Ok(JValue::Bool(if self.func == Func::StartsWith {
            text.starts_with(pattern.as_ref())
        } else {
            text.ends_with(pattern.as_ref())
        }))
    }

    fn join(&self) -> RtResult<JValue<'a>> {
        let separator = self.val(0)?;
        let array = self.val(1)?;
        let (Some(separator), View::Array(items)) = (separator.string_value(), array.view()) else {
            return Err(self.type_error(format!(
                "function {} expects a string separator and an array of strings.",
                self.name()
            )));
        };
        let mut out = String::new();
        let mut first = true;
        let mut bad = false;
        items
            .try_for_each::<()>(|item| {
                match item.string_value() {
                    Some(s) => {
                        if !first {
                            out.push_str(&separator);
                        }
                        first = false;
                        out.push_str(&s);
                    }
                    None => bad = true,
                }
                if bad { Err(()) } else { Ok(()) }
            })
            .ok();
        if bad {
            return Err(self.type_error(format!(
                "function {} expects an array of string.",
                self.name()
            )));
        }
        Ok(JValue::Str(out.into()))
    }

    fn map(&self) -> RtResult<JValue<'a>> {
        let Some(expr) = self.expr(0) else {
            return Err(self.type_error(format!(
                "function {} expects its first argument to be an expression type.",
                self.name()
            )));
        };
        let View::Array(items) = self.val(1)?.view() else {
            return Err(self.type_error(format!(
                "function {} expects its second argument to be an array.",
                self.name()
            )));
        };
        let mut out = Vec::with_capacity(items.len());
        items.try_for_each::<RtError>(|item| {
            out.push(eval(expr, &item)?);
            Ok(())
        })?;
        Ok(JValue::Array(Rc::new(out)))
    }

    fn min_max(&self) -> RtResult<JValue<'a>> {
        let (items, kind) = self.array_of_same(0, &["number", "string"])?;
        if items.is_empty() {
            return Ok(JValue::Null);
        }
        let want = if self.func == Func::Max {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        if kind == "number" {
            let all_integers = items.iter().all(|v| v.token_type() == TokenType::Integer);
            if all_integers {
                let best = items
                    .iter()
                    .map(integer_of)
                    .reduce(|a, b| if b.cmp(&a) == want { b } else { a })
                    .unwrap_or(0);
                return Ok(integer_value(best));
            }
            let best = items
                .iter()
                .filter_map(JValue::number)
                .reduce(|a, b| {
                    if b.partial_cmp(&a) == Some(want) {
                        b
                    } else {
                        a
                    }
                })
                .unwrap_or(f64::NAN);
            return Ok(JValue::Float(best));
        }
        let mut best: Option<&JValue<'a>> = None;
        for item in &items {
            best = match best {
                None => Some(item),
                Some(current) => {
                    let ord = dotnet::utf16_cmp(
                        &item.string_value().unwrap_or_default(),
                        &current.string_value().unwrap_or_default(),
                    );
                    Some(if ord == want { item } else { current })
                }
            };
        }
        Ok(match best {
            Some(v @ JValue::Str(_)) => v.clone(),
            Some(v) => match v.view() {
                View::Str(_) => v.clone(),
                _ => JValue::Str(v.string_value().unwrap_or_default().into_owned().into()),
            },
            None => JValue::Null,
        })
    }

    /// Evaluates the key expression of `*_by` functions on every element.
    fn keys_by(&self, items: &[JValue<'a>], expr: &Node) -> RtResult<Vec<JValue<'a>>> {
        let mut keys = Vec::with_capacity(items.len());
        let mut expected: Option<&'static str> = None;
        for item in items {
            let key = eval(expr, item)?;
            let kind = key.token_type().jmespath_name();
            if kind != "number" && kind != "string" {
                return Err(self.type_error(format!(
                    "the expression argument of function {} should return a number or a string.",
                    self.name()
                )));
            }
            match expected {
                None => expected = Some(kind),
                Some(e) if e != kind => {
                    return Err(self.type_error(format!(
                        "all items resulting from the evaluation of the expression argument of function {} should have the same type.",
                        self.name()
                    )));
                }
                _ => {}
            }
            keys.push(key);
        }
        Ok(keys)
    }

    fn by_args(&self) -> RtResult<(Vec<JValue<'a>>, &'n Node)> {
        let View::Array(items) = self.val(0)?.view() else {
            return Err(self.type_error(format!(
                "function {} expects its first argument to be an array.",
                self.name()
            )));
        };
        let items = items.to_vec();
        let Some(expr) = self.expr(1) else {
            return Err(self.type_error(format!(
                "function {} expects its second argument to be an expression type.",
                self.name()
            )));
        };
        Ok((items, expr))
    }

    fn min_max_by(&self) -> RtResult<JValue<'a>> {
        let (items, expr) = self.by_args()?;
        let keys = self.keys_by(&items, expr)?;
        let want = if self.func == Func::MaxBy {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        // `Aggregate((l, r) => key(l) > key(r) ? l : r)`: ties go to the later element.
        let mut best: Option<usize> = None;
        for i in 0..items.len() {
            best = match best {
                None => Some(i),
                Some(b) => {
                    if key_cmp(&keys[b], &keys[i]) == want {
                        Some(b)
                    } else {
                        Some(i)
                    }
                }
            };
        }
        Ok(best.map_or(JValue::Null, |i| items[i].clone()))
    }

    fn sort(&self) -> RtResult<JValue<'a>> {
        let (mut items, kind) = self.array_of_same(0, &[])?;
        match kind {
            "none" => {}
            "number" => items.sort_by(num_cmp),
            "string" => items.sort_by(|a, b| {
                dotnet::utf16_cmp(
                    &a.string_value().unwrap_or_default(),
                    &b.string_value().unwrap_or_default(),
                )
            }),
            _ => {
                return Err(self.type_error(format!(
                    "function {} expects an array of number or string.",
                    self.name()
                )));
            }
        }
        Ok(JValue::Array(Rc::new(items)))
    }

    fn sort_by(&self) -> RtResult<JValue<'a>> {
        let (items, expr) = self.by_args()?;
        let keys = self.keys_by(&items, expr)?;
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| key_cmp(&keys[a], &keys[b]));
        Ok(JValue::Array(Rc::new(
            order.into_iter().map(|i| items[i].clone()).collect(),
        )))
    }

    fn merge(&self) -> RtResult<JValue<'a>> {
        let mut out: Vec<(JStr<'a>, JValue<'a>)> = Vec::new();
        for i in 0..self.args.len() {
            let source = self.object(i)?;
            merge_into(&mut out, source, 0)?;
        }
        Ok(JValue::Object(Rc::new(out)))
    }

    fn arithmetic(&self) -> RtResult<JValue<'a>> {
        let left = self.positional(0, NUMBER)?;
        let right = self.positional(1, NUMBER)?;
        let float = left.token_type() == TokenType::Float || right.token_type() == TokenType::Float;
        if float {
            let (a, b) = (left.number().unwrap_or(0.0), right.number().unwrap_or(0.0));
            return Ok(JValue::Float(match self.func {
                Func::Add => a + b,
                Func::Subtract => a - b,
                Func::Multiply => a * b,
                Func::Divide => a / b,
                _ => a.powf(b),
            }));
        }
        let (a, b) = (self.long(left)?, self.long(right)?);
        Ok(JValue::Int(match self.func {
            // C# `long` arithmetic is unchecked: it wraps.
            Func::Add => a.wrapping_add(b),
            Func::Subtract => a.wrapping_sub(b),
            Func::Multiply => a.wrapping_mul(b),
            Func::Divide => {
                if b == 0 {
                    return Err(RtError::divide_by_zero(self.name()));
                }
                a.checked_div(b).ok_or_else(|| {
                    RtError::overflow(
                        self.name(),
                        format!("function divide: {a} / {b} does not fit a 64-bit signed integer"),
                    )
                })?
            }
            _ => {
                let p = (a as f64).powf(b as f64);
                dotnet::to_int64(p).ok_or_else(|| {
                    RtError::overflow(
                        self.name(),
                        format!(
                            "function pow: {a} to the power {b} does not fit a 64-bit signed integer; make an argument a float (e.g. `{a}.0`) for a floating-point result"
                        ),
                    )
                })?
            }
        }))
    }

    fn insert_string(&self) -> RtResult<JValue<'a>> {
        let original = self.positional(0, STRING)?;
        let insert = self.positional(1, STRING)?;
        let pos_value = self.positional(2, INTEGER)?;
        let original = original.string_value().unwrap_or_default();
        let insert = insert.string_value().unwrap_or_default();
        // `Value<int>()`
        let pos = match pos_value.view() {
            View::Int(i) => i32::try_from(i).ok(),
            _ => None,
        };
        let Some(pos) = pos else {
            return Err(RtError::overflow(
                self.name(),
                format!(
                    "function insertString: the position {} does not fit a 32-bit integer",
                    pos_value.to_json().unwrap_or_default()
                ),
            ));
        };
        let len16 = dotnet::utf16_len(&original);
        let out_of_range = |detail: String| {
            RtError::out_of_range(
                self.name(),
                format!("function insertString: the position {pos} {detail}"),
            )
        };
        if pos < 0 || pos as usize > len16 {
            return Err(out_of_range(format!(
                "is outside the string; it must be between 0 and the string's length ({len16})"
            )));
        }
        // Convert the UTF-16 position to a byte offset.
        let mut units = 0usize;
        let mut byte = original.len();
        for (b, c) in original.char_indices() {
            if units == pos as usize {
                byte = b;
                break;
            }
            units += c.len_utf16();
            if units > pos as usize {
                return Err(out_of_range(
                    "falls inside a surrogate pair (a character outside the basic multilingual plane)"
                        .to_owned(),
                ));
            }
        }
        let mut out = String::with_capacity(original.len() + insert.len());
        out.push_str(&original[..byte]);
        out.push_str(&insert);
        out.push_str(&original[byte..]);
        Ok(JValue::Str(out.into()))
    }

    fn unix_timestamp(&self) -> RtResult<JValue<'a>> {
        let value = self.positional(0, INTEGER)?;
        let n = self.long(value)?;
        let millis = self.func == Func::FromUnixTimestampMs;
        // DateTimeOffset.FromUnixTimeSeconds / FromUnixTimeMilliseconds ranges.
        const MIN_S: i64 = -62_135_596_800;
        const MAX_S: i64 = 253_402_300_799;
        let (min, max, unit) = if millis {
            (MIN_S * 1000, MAX_S * 1000 + 999, "milliseconds")
        } else {
            (MIN_S, MAX_S, "seconds")
        };
        let date = if (min..=max).contains(&n) {
            if millis {
                DateTime::from_timestamp_millis(n)
            } else {
                DateTime::from_timestamp(n, 0)
            }
        } else {
            None
        };
        date.map(JValue::Date).ok_or_else(|| {
            RtError::out_of_range(self.name(),
                format!(
                    "function {}: {n} {unit} since the Unix epoch is outside the supported dates (between {min} and {max})",
                    self.name()
                ),
            )
        })
    }
}

fn integer_of(v: &JValue<'_>) -> i128 {
    match v.view() {
        View::Int(i) => i128::from(i),
        View::UInt(u) => i128::from(u),
        _ => 0,
    }
}

fn integer_value<'a>(i: i128) -> JValue<'a> {
    match i64::try_from(i) {
        Ok(i) => JValue::Int(i),
        Err(_) => JValue::UInt(u64::try_from(i).unwrap_or(u64::MAX)),
    }
}

/// Numeric order (integers exactly, otherwise as doubles).
fn num_cmp(a: &JValue<'_>, b: &JValue<'_>) -> Ordering {
    let int = |v: &JValue<'_>| matches!(v.view(), View::Int(_) | View::UInt(_));
    if int(a) && int(b) {
        return integer_of(a).cmp(&integer_of(b));
    }
    let (x, y) = (a.number().unwrap_or(0.0), b.number().unwrap_or(0.0));
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

/// Order of `*_by` keys (all numbers or all strings).
fn key_cmp(a: &JValue<'_>, b: &JValue<'_>) -> Ordering {
    if a.number().is_some() {
        num_cmp(a, b)
    } else {
        dotnet::utf16_cmp(
            &a.string_value().unwrap_or_default(),
            &b.string_value().unwrap_or_default(),
        )
    }
}

/// `JObject.Merge` with default settings: nested objects merge, arrays concatenate, a null
/// never overwrites.
fn merge_into<'a>(
    target: &mut Vec<(JStr<'a>, JValue<'a>)>,
    source: Obj<'_, 'a>,
    depth: usize,
) -> RtResult<()> {
    if depth > MAX_VALUE_DEPTH {
        return Err(RtError::too_deep());
    }
    for (key, value) in source.entries() {
        let Some(pos) = target.iter().position(|(k, _)| k.as_str() == key.as_str()) else {
            target.push((key, value));
            continue;
        };
        let existing = &target[pos].1;
        let merged = match (existing.view(), value.view()) {
            (View::Object(old), View::Object(new)) => {
                let mut inner = old.entries();
                merge_into(&mut inner, new, depth + 1)?;
                Some(JValue::Object(Rc::new(inner)))
            }
            (View::Array(old), View::Array(new)) => {
                let mut items = old.to_vec();
                items.extend(new.to_vec());
                Some(JValue::Array(Rc::new(items)))
            }
            _ => (!value.is_null()).then(|| value.clone()),
        };
        if let Some(m) = merged {
            target[pos].1 = m;
        }
    }
    Ok(())
}
