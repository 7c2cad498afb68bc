//! The path parser: Newtonsoft's `JPath` state machine, re-implemented.
//!
//! The quirks are deliberate, because templates written against Newtonsoft rely on them or must
//! fail the same way:
//! * a leading `$` is skipped only when followed by `.` or `[` (`$foo` is the member `$foo`);
//! * a member name runs to the next `.`, `[`, `(`, `]`, `)` or space (inside a filter also to
//!   `= < ! > | &`), so `iothub-connection-device-id` and `@heartRate` (no dot) work;
//! * `$.['x']` is accepted (a dot followed by an indexer), `..` followed by an array indexer is a
//!   plain indexer (`$..[0]` is `$[0]`, `$..[*]` is `$[*]`);
//! * only single-quoted strings exist (`["x"]` is an error), numbers in filters end at a space or
//!   `)`, there are no grouping parentheses, and `&&`/`||` have no precedence;
//! * whitespace means the space character only.
//!
//! Where Newtonsoft would crash with an index-out-of-range exception the parser reports a syntax
//! error. Two things Newtonsoft reports only when evaluating are rejected here, when compiling:
//! a slice step of zero and an invalid `/regex/` literal.

use regex::Regex;

use super::ast::{Cmp, Expr, Filter, Lit, Op, Operand, Slice, Step, SubPath};
use super::compare::{compile_regex, parse_double, parse_int64};

/// Deepest nesting of filters and `&&`/`||` groups.
pub const MAX_DEPTH: usize = 128;
/// Most path steps in one expression, nested filters included.
pub const MAX_STEPS: usize = 1024;

const OPEN_INDEXER: &str = "an indexer is not closed; expected ']'";
const OPEN_QUERY: &str = "a filter is not closed; expected ')' and ']'";

/// A syntax error at a byte offset of the expression.
#[derive(Debug)]
pub(super) struct SyntaxError {
    pub(super) offset: usize,
    pub(super) message: String,
}

/// Parses a whole expression into its step list.
pub(super) fn parse(text: &str) -> Result<Vec<Step>, SyntaxError> {
    Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
        depth: 0,
        steps: 0,
    }
    .parse_main()
}

type PResult<T> = Result<T, SyntaxError>;

struct Parser<'s> {
    s: &'s str,
    b: &'s [u8],
    /// Current byte offset; always on a character boundary where it is used to slice.
    i: usize,
    depth: usize,
    steps: usize,
}

/// A composite `&&`/`||` group while its filter is being parsed (Newtonsoft mutates these lists
/// after linking them, so they are built in an arena and turned into a tree at the end).
struct Group {
    and: bool,
    items: Vec<Item>,
}

enum Item {
    Leaf(Expr),
    Group(usize),
}

fn build_group(arena: &mut [Group], index: usize) -> Expr {
    let items = std::mem::take(&mut arena[index].items);
    let exprs: Vec<Expr> = items
        .into_iter()
        .map(|item| match item {
            Item::Leaf(e) => e,
            Item::Group(j) => build_group(arena, j),
        })
        .collect();
    if arena[index].and {
        Expr::And(exprs.into_boxed_slice())
    } else {
        Expr::Or(exprs.into_boxed_slice())
    }
}

fn member_step(name: &str, scan: bool) -> Step {
    match (name == "*", scan) {
        (true, true) => Step::ScanAll,
        (true, false) => Step::AllFields,
        (false, true) => Step::Scan(name.into()),
        (false, false) => Step::Field(name.into()),
    }
}

fn utf8_width(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

impl Parser<'_> {
    fn len(&self) -> usize {
        self.b.len()
    }

    fn slice(&self, from: usize, to: usize) -> &str {
        self.s.get(from..to).unwrap_or_default()
    }

    fn char_at(&self, offset: usize) -> Option<char> {
        self.s.get(offset..).and_then(|rest| rest.chars().next())
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            offset,
            message: message.into(),
        }
    }

    fn describe(&self, offset: usize) -> String {
        match self.char_at(offset) {
            Some(c) => format!("{c:?}"),
            None => "the end".to_owned(),
        }
    }

    fn eat_ws(&mut self) {
        while self.i < self.len() && self.b[self.i] == b' ' {
            self.i += 1;
        }
    }

    fn ensure(&self, message: &str) -> PResult<()> {
        if self.i >= self.len() {
            Err(self.err(self.i, message))
        } else {
            Ok(())
        }
    }

    fn matches(&mut self, token: &str) -> bool {
        if self.b[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    fn push(&mut self, steps: &mut Vec<Step>, step: Step) -> PResult<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.err(
                self.i,
                format!("the expression has more than {MAX_STEPS} path steps; simplify it"),
            ));
        }
        steps.push(step);
        Ok(())
    }

    fn nest(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(
                self.i,
                format!(
                    "filters and '&&'/'||' groups nest more than {MAX_DEPTH} levels deep; simplify the expression"
                ),
            ));
        }
        Ok(())
    }

    fn parse_main(&mut self) -> PResult<Vec<Step>> {
        let mut part_start = self.i;
        self.eat_ws();
        let mut steps = Vec::new();
        if self.i == self.len() {
            return Ok(steps);
        }
        if self.b[self.i] == b'$' {
            if self.len() == 1 {
                return Ok(steps);
            }
            match self.b.get(self.i + 1) {
                // Newtonsoft indexes past the end here (`"  $"`).
                None => {
                    return Err(self.err(
                        self.i + 1,
                        "the expression ends after '$' preceded by spaces; write '$' alone",
                    ));
                }
                Some(b'.' | b'[') => {
                    self.i += 1;
                    part_start = self.i;
                }
                Some(_) => {}
            }
        }
        if !self.parse_path(&mut steps, part_start, false)? {
            let last = self.i;
            self.eat_ws();
            if self.i < self.len() {
                let message = match self.b[last] {
                    b']' | b')' => format!(
                        "unexpected {} without a matching opening bracket",
                        self.describe(last)
                    ),
                    b' ' => format!(
                        "unexpected {} after a space; a path cannot contain spaces outside quoted names like ['a b']",
                        self.describe(self.i)
                    ),
                    _ => format!("unexpected character {}", self.describe(last)),
                };
                let at = if self.b[last] == b' ' { self.i } else { last };
                return Err(self.err(at, message));
            }
        }
        Ok(steps)
    }

    /// Newtonsoft's `ParsePath`; returns whether the end of the expression was reached.
    fn parse_path(
        &mut self,
        steps: &mut Vec<Step>,
        mut part_start: usize,
        query: bool,
    ) -> PResult<bool> {
        let mut scan = false;
        let mut following_indexer = false;
        let mut following_dot = false;
        while self.i < self.len() {
            let c = self.b[self.i];
            match c {
                b'[' | b'(' => {
                    if self.i > part_start {
                        let step = member_step(self.slice(part_start, self.i), scan);
                        self.push(steps, step)?;
                        scan = false;
                    }
                    let step = self.parse_indexer(c, scan)?;
                    self.push(steps, step)?;
                    scan = false;
                    self.i += 1;
                    part_start = self.i;
                    following_indexer = true;
                    following_dot = false;
                }
                b']' | b')' | b' ' => break,
                b'.' => {
                    if self.i > part_start {
                        let step = member_step(self.slice(part_start, self.i), scan);
                        self.push(steps, step)?;
                        scan = false;
                    }
                    if self.b.get(self.i + 1) == Some(&b'.') {
                        scan = true;
                        self.i += 1;
                    }
                    self.i += 1;
                    part_start = self.i;
                    following_indexer = false;
                    following_dot = true;
                }
                _ => {
                    if query && matches!(c, b'=' | b'<' | b'!' | b'>' | b'|' | b'&') {
                        break;
                    }
                    if following_indexer {
                        return Err(self.err(
                            self.i,
                            format!(
                                "unexpected character {} after an indexer; separate the next member with '.'",
                                self.describe(self.i)
                            ),
                        ));
                    }
                    self.i += 1;
                }
            }
        }
        let at_end = self.i == self.len();
        if self.i > part_start {
            let step = member_step(self.slice(part_start, self.i).trim_end(), scan);
            self.push(steps, step)?;
        } else if following_dot && (at_end || query) {
            return Err(self.err(self.i, "expected a member name after '.'"));
        }
        Ok(at_end)
    }

    fn parse_indexer(&mut self, open: u8, scan: bool) -> PResult<Step> {
        self.i += 1;
        let close = if open == b'[' { b']' } else { b')' };
        self.ensure(OPEN_INDEXER)?;
        self.eat_ws();
        self.ensure(OPEN_INDEXER)?;
        match self.b[self.i] {
            b'\'' => self.parse_quoted_field(close, scan),
            b'?' => self.parse_query(close, scan),
            _ => self.parse_array_indexer(close),
        }
    }

    fn parse_index(&self, from: usize, to: usize) -> PResult<i32> {
        let text = self.slice(from, to);
        text.parse::<i32>().map_err(|_| {
            self.err(
                from,
                format!("{text:?} is not an array index; expected a 32-bit integer"),
            )
        })
    }

    fn parse_array_indexer(&mut self, close: u8) -> PResult<Step> {
        let mut start = self.i;
        let mut end: Option<usize> = None;
        let mut indexes: Option<Vec<i32>> = None;
        let mut colons = 0u32;
        let mut slice = Slice {
            start: None,
            end: None,
            step: None,
        };
        while self.i < self.len() {
            let c = self.b[self.i];
            if c == b' ' {
                end = Some(self.i);
                self.eat_ws();
                continue;
            }
            if c == close {
                let stop = end.unwrap_or(self.i);
                if let Some(mut list) = indexes {
                    if stop == start {
                        return Err(self.err(self.i, "expected an array index"));
                    }
                    list.push(self.parse_index(start, stop)?);
                    return Ok(Step::Indexes(list.into_boxed_slice()));
                }
                if colons > 0 {
                    if stop > start {
                        let value = self.parse_index(start, stop)?;
                        if colons == 1 {
                            slice.end = Some(value);
                        } else {
                            slice.step = Some(value);
                        }
                    }
                    if slice.step == Some(0) {
                        return Err(self.err(self.i, "a slice step cannot be zero"));
                    }
                    return Ok(Step::Slice(slice));
                }
                if stop == start {
                    return Err(self.err(self.i, "expected an array index"));
                }
                return Ok(Step::Index(self.parse_index(start, stop)?));
            } else if c == b',' {
                let stop = end.unwrap_or(self.i);
                if stop == start {
                    return Err(self.err(self.i, "expected an array index before ','"));
                }
                let value = self.parse_index(start, stop)?;
                indexes.get_or_insert_with(Vec::new).push(value);
                self.i += 1;
                self.eat_ws();
                start = self.i;
                end = None;
            } else if c == b'*' {
                self.i += 1;
                self.ensure(OPEN_INDEXER)?;
                self.eat_ws();
                self.ensure(OPEN_INDEXER)?;
                if self.b[self.i] != close {
                    return Err(self.err(
                        self.i,
                        format!(
                            "unexpected character {} after '*'; expected '{}'",
                            self.describe(self.i),
                            close as char
                        ),
                    ));
                }
                return Ok(Step::AllIndexes);
            } else if c == b':' {
                let stop = end.unwrap_or(self.i);
                if stop > start {
                    let value = self.parse_index(start, stop)?;
                    match colons {
                        0 => slice.start = Some(value),
                        1 => slice.end = Some(value),
                        _ => slice.step = Some(value),
                    }
                }
                colons += 1;
                self.i += 1;
                self.eat_ws();
                start = self.i;
                end = None;
            } else if !c.is_ascii_digit() && c != b'-' {
                let hint = if c == b'"' {
                    "; quote member names with single quotes, like ['name']"
                } else {
                    "; expected an index, a slice, '*', a 'quoted name' or ?(filter)"
                };
                return Err(self.err(
                    self.i,
                    format!(
                        "unexpected character {} in an indexer{hint}",
                        self.describe(self.i)
                    ),
                ));
            } else {
                if end.is_some() {
                    return Err(self.err(
                        self.i,
                        format!(
                            "unexpected character {} after a space in an indexer",
                            self.describe(self.i)
                        ),
                    ));
                }
                self.i += 1;
            }
        }
        Err(self.err(self.i, OPEN_INDEXER))
    }

    /// Reads a quoted string starting at the current character, which is skipped whatever it is
    /// (Newtonsoft does the same after a `,` in a name list).
    fn read_quoted_string(&mut self) -> PResult<Box<str>> {
        let open = self.i;
        self.i += utf8_width(self.b[self.i]);
        let mut out: Vec<u8> = Vec::new();
        while self.i < self.len() {
            let c = self.b[self.i];
            if c == b'\\' && self.i + 1 < self.len() {
                self.i += 1;
                let e = self.b[self.i];
                let resolved = match e {
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'\\' | b'"' | b'\'' | b'/' => e,
                    _ => {
                        return Err(self.err(
                            self.i - 1,
                            format!(
                                "unknown escape '\\{}' in a quoted string; use \\\\, \\', \\\", \\/, \\b, \\f, \\n, \\r or \\t",
                                self.char_at(self.i).unwrap_or('?')
                            ),
                        ));
                    }
                };
                out.push(resolved);
                self.i += 1;
            } else if c == b'\'' {
                self.i += 1;
                return Ok(String::from_utf8(out)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                    .into_boxed_str());
            } else {
                out.push(c);
                self.i += 1;
            }
        }
        Err(self.err(open, "a quoted string is not closed; expected \"'\""))
    }

    fn parse_quoted_field(&mut self, close: u8, scan: bool) -> PResult<Step> {
        let mut fields: Option<Vec<Box<str>>> = None;
        while self.i < self.len() {
            let field = self.read_quoted_string()?;
            self.eat_ws();
            self.ensure(OPEN_INDEXER)?;
            let c = self.b[self.i];
            if c == close {
                return Ok(match (fields, scan) {
                    (Some(mut list), scan) => {
                        list.push(field);
                        let list = list.into_boxed_slice();
                        if scan {
                            Step::ScanFields(list)
                        } else {
                            Step::Fields(list)
                        }
                    }
                    (None, true) => Step::Scan(field),
                    (None, false) => Step::Field(field),
                });
            } else if c == b',' {
                self.i += 1;
                self.eat_ws();
                fields.get_or_insert_with(Vec::new).push(field);
            } else {
                return Err(self.err(
                    self.i,
                    format!(
                        "unexpected character {} after a quoted name; expected ',' or '{}'",
                        self.describe(self.i),
                        close as char
                    ),
                ));
            }
        }
        Err(self.err(self.i, OPEN_INDEXER))
    }

    fn parse_query(&mut self, close: u8, scan: bool) -> PResult<Step> {
        self.i += 1;
        self.ensure(OPEN_INDEXER)?;
        if self.b[self.i] != b'(' {
            return Err(self.err(
                self.i,
                format!(
                    "unexpected character {} after '?'; a filter is written [?(…)]",
                    self.describe(self.i)
                ),
            ));
        }
        self.i += 1;
        let outer = self.depth;
        self.nest()?;
        let expr = self.parse_expression()?;
        self.depth = outer;
        self.i += 1;
        self.ensure(OPEN_INDEXER)?;
        self.eat_ws();
        self.ensure(OPEN_INDEXER)?;
        if self.b[self.i] != close {
            return Err(self.err(
                self.i,
                format!(
                    "unexpected character {} after a filter; expected '{}'",
                    self.describe(self.i),
                    close as char
                ),
            ));
        }
        let filter = Box::new(Filter::new(expr));
        Ok(if scan {
            Step::ScanFilter(filter)
        } else {
            Step::Filter(filter)
        })
    }

    /// Newtonsoft's `ParseExpression`, including its grouping: every change between `&&` and
    /// `||` opens a group nested in the current one.
    fn parse_expression(&mut self) -> PResult<Expr> {
        let mut arena: Vec<Group> = Vec::new();
        let mut parent: Option<usize> = None;
        while self.i < self.len() {
            let left = self.parse_side()?;
            let c = self.b[self.i];
            let leaf = if matches!(c, b')' | b'|' | b'&') {
                Expr::Exists(left)
            } else {
                let op = self.parse_operator()?;
                let right_at = self.i;
                let right = self.parse_side()?;
                self.comparison(op, left, right, right_at)?
            };
            let c = self.b[self.i];
            if c == b')' {
                return Ok(match parent {
                    Some(p) => {
                        arena[p].items.push(Item::Leaf(leaf));
                        build_group(&mut arena, 0)
                    }
                    None => leaf,
                });
            }
            if c == b'&' {
                if !self.matches("&&") {
                    return Err(self.err(self.i, "unexpected '&'; write '&&'"));
                }
                let p = self.group(&mut arena, &mut parent, true)?;
                arena[p].items.push(Item::Leaf(leaf.clone()));
            }
            // Newtonsoft reads the next character without a bounds check here.
            self.ensure(OPEN_QUERY)?;
            if self.b[self.i] == b'|' {
                if !self.matches("||") {
                    return Err(self.err(self.i, "unexpected '|'; write '||'"));
                }
                let p = self.group(&mut arena, &mut parent, false)?;
                arena[p].items.push(Item::Leaf(leaf));
            }
        }
        Err(self.err(self.i, OPEN_QUERY))
    }

    /// The group the next operand joins: the current one if it has the same operator, else a new
    /// one nested in it (the first group created is the root, index 0).
    fn group(
        &mut self,
        arena: &mut Vec<Group>,
        parent: &mut Option<usize>,
        and: bool,
    ) -> PResult<usize> {
        if let Some(p) = *parent
            && arena[p].and == and
        {
            return Ok(p);
        }
        self.nest()?;
        let index = arena.len();
        arena.push(Group {
            and,
            items: Vec::new(),
        });
        if let Some(p) = *parent {
            arena[p].items.push(Item::Group(index));
        }
        *parent = Some(index);
        Ok(index)
    }

    fn comparison(&self, op: Op, left: Operand, right: Operand, right_at: usize) -> PResult<Expr> {
        let mut regex: Option<Regex> = None;
        if op == Op::Regex
            && let Operand::Lit(Lit::Str(text)) = &right
        {
            regex = Some(compile_regex(text).map_err(|reason| {
                let at = right_at
                    + self.b[right_at..]
                        .iter()
                        .take_while(|&&b| b == b' ')
                        .count();
                self.err(
                    at,
                    format!("cannot use the regular expression {text}: {reason}"),
                )
            })?);
        }
        Ok(Expr::Cmp(Box::new(Cmp {
            op,
            left,
            right,
            regex,
        })))
    }

    fn parse_side(&mut self) -> PResult<Operand> {
        self.eat_ws();
        self.ensure(OPEN_QUERY)?;
        let c = self.b[self.i];
        if c == b'$' || c == b'@' {
            let mut steps = Vec::new();
            if c == b'$' {
                self.push(&mut steps, Step::Root)?;
            }
            self.i += 1;
            if self.parse_path(&mut steps, self.i, true)? {
                return Err(self.err(self.i, OPEN_QUERY));
            }
            self.eat_ws();
            self.ensure(OPEN_QUERY)?;
            return Ok(Operand::Path(SubPath::new(steps)));
        }
        if let Some(lit) = self.parse_value()? {
            self.eat_ws();
            self.ensure(OPEN_QUERY)?;
            return Ok(Operand::Lit(lit));
        }
        Err(self.err(
            self.i,
            format!(
                "unexpected {} in a filter; expected @, $, a number, a 'string', true, false, null or /regex/",
                self.describe(self.i)
            ),
        ))
    }

    fn parse_value(&mut self) -> PResult<Option<Lit>> {
        let c = self.b[self.i];
        match c {
            b'\'' => Ok(Some(Lit::Str(self.read_quoted_string()?))),
            b'0'..=b'9' | b'-' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.len() {
                    let ch = self.b[self.i];
                    if ch == b' ' || ch == b')' {
                        let text = self.slice(start, self.i);
                        let lit = if text.contains(['.', 'E', 'e']) {
                            parse_double(text).map(Lit::Float)
                        } else {
                            parse_int64(text).map(Lit::Int)
                        };
                        return lit.map(Some).ok_or_else(|| {
                            self.err(
                                start,
                                format!("{text:?} is not a number; a number in a filter ends with a space or ')'"),
                            )
                        });
                    }
                    self.i += 1;
                }
                Err(self.err(
                    start,
                    "a number in a filter must be followed by a space or ')'; the filter is not closed",
                ))
            }
            b't' if self.matches("true") => Ok(Some(Lit::Bool(true))),
            b'f' if self.matches("false") => Ok(Some(Lit::Bool(false))),
            b'n' if self.matches("null") => Ok(Some(Lit::Null)),
            b'/' => Ok(Some(Lit::Str(self.read_regex()?))),
            _ => Ok(None),
        }
    }

    /// `/pattern/flags`, returned verbatim (backslash escapes kept).
    fn read_regex(&mut self) -> PResult<Box<str>> {
        let start = self.i;
        self.i += 1;
        while self.i < self.len() {
            let c = self.b[self.i];
            if c == b'\\' && self.i + 1 < self.len() {
                self.i += 2;
            } else if c == b'/' {
                self.i += 1;
                while let Some(flag) = self.char_at(self.i) {
                    if !flag.is_alphabetic() {
                        break;
                    }
                    self.i += flag.len_utf8();
                }
                return Ok(self.slice(start, self.i).into());
            } else {
                self.i += 1;
            }
        }
        Err(self.err(start, "a regular expression is not closed; expected '/'"))
    }

    fn parse_operator(&mut self) -> PResult<Op> {
        if self.i + 1 >= self.len() {
            return Err(self.err(self.i, OPEN_QUERY));
        }
        const OPERATORS: [(&str, Op); 10] = [
            ("===", Op::StrictEq),
            ("==", Op::Eq),
            ("=~", Op::Regex),
            ("!==", Op::StrictNe),
            ("!=", Op::Ne),
            ("<>", Op::Ne),
            ("<=", Op::Le),
            ("<", Op::Lt),
            (">=", Op::Ge),
            (">", Op::Gt),
        ];
        for (token, op) in OPERATORS {
            if self.matches(token) {
                return Ok(op);
            }
        }
        Err(self.err(
            self.i,
            format!(
                "unexpected {} in a filter; expected an operator (==, !=, <, <=, >, >=, =~, ===, !==), '&&', '||' or ')'",
                self.describe(self.i)
            ),
        ))
    }
}
