//! Pratt parser producing [`Node`]s, with the binding powers of the JMESPath reference
//! implementation.

use std::sync::Arc;

use super::ast::{Cmp, Kind, Lit, Node};
use super::functions::Func;
use super::lexer::{Tok, tokenize, unescape_json_string};

/// Maximum height of the syntax tree (and of nested parser calls).
pub(crate) const MAX_AST_DEPTH: u32 = 64;
/// Maximum nesting of arrays/objects inside a backtick literal.
const MAX_LITERAL_DEPTH: usize = 64;

/// A compile error: message and byte offset into the expression.
pub(crate) struct ParseError {
    pub(crate) message: String,
    pub(crate) offset: usize,
}

type PResult<T> = Result<T, ParseError>;

/// Parses a whole expression.
pub(crate) fn parse(text: &str) -> PResult<Node> {
    let tokens = tokenize(text).map_err(|e| ParseError {
        message: e.message,
        offset: e.offset,
    })?;
    let mut p = Parser {
        tokens,
        pos: 0,
        level: 0,
    };
    let node = p.expression(0)?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    Ok(node)
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    level: u32,
}

fn binding_power(tok: &Tok) -> u8 {
    match tok {
        Tok::Pipe => 1,
        Tok::Or => 2,
        Tok::And => 3,
        Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => 5,
        Tok::Flatten => 9,
        Tok::Star => 20,
        Tok::Filter => 21,
        Tok::Dot => 40,
        Tok::Not => 45,
        Tok::LBrace => 50,
        Tok::LBracket => 55,
        Tok::LParen => 60,
        _ => 0,
    }
}

/// Projections continue over tokens binding at least this tightly.
const PROJECTION_STOP: u8 = 10;

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |(t, _)| t)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.tokens
            .get(self.pos + ahead)
            .map_or(&Tok::Eof, |(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .or(self.tokens.last())
            .map_or(0, |(_, o)| *o)
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    fn error(&self, offset: usize, message: String) -> ParseError {
        ParseError { message, offset }
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        self.error(
            self.offset(),
            format!("unexpected {}; expected {expected}", self.peek().describe()),
        )
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> PResult<()> {
        if self.peek() == &tok {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn mk(&self, kind: Kind) -> PResult<Node> {
        let node = Node::new(kind);
        if node.depth > MAX_AST_DEPTH {
            return Err(self.error(
                self.offset(),
                format!("the expression nests more than {MAX_AST_DEPTH} levels deep"),
            ));
        }
        Ok(node)
    }

    fn expression(&mut self, rbp: u8) -> PResult<Node> {
        self.level += 1;
        if self.level > MAX_AST_DEPTH {
            return Err(self.error(
                self.offset(),
                format!("the expression nests more than {MAX_AST_DEPTH} levels deep"),
            ));
        }
        let mut left = self.nud()?;
        while rbp < binding_power(self.peek()) {
            left = self.led(left)?;
        }
        self.level -= 1;
        Ok(left)
    }

    fn nud(&mut self) -> PResult<Node> {
        let offset = self.offset();
        match self.next() {
            Tok::At => Ok(Node::leaf(Kind::Current)),
            Tok::Ident(name) => {
                if self.peek() == &Tok::LParen {
                    self.function(name, offset)
                } else {
                    Ok(Node::leaf(Kind::Field(name.into())))
                }
            }
            Tok::Quoted(name) => {
                if self.peek() == &Tok::LParen {
                    return Err(self.error(
                        offset,
                        "a function name must be an unquoted identifier".to_owned(),
                    ));
                }
                Ok(Node::leaf(Kind::Field(name.into())))
            }
            Tok::Literal(text) => {
                let lit = parse_literal(&text).map_err(|m| self.error(offset, m))?;
                Ok(Node::leaf(Kind::Literal(lit)))
            }
            Tok::Raw(text) => Ok(Node::leaf(Kind::Literal(Lit::Str(text.into())))),
            Tok::Star => {
                let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
                self.mk(Kind::ValueProjection(
                    Box::new(Node::leaf(Kind::Current)),
                    Box::new(rhs),
                ))
            }
            Tok::Filter => self.filter(Node::leaf(Kind::Current)),
            Tok::Flatten => self.flatten(Node::leaf(Kind::Current)),
            Tok::LBracket => match (self.peek(), self.peek_at(1)) {
                (Tok::Number(_) | Tok::Colon, _) => {
                    let index = self.index_expression()?;
                    self.project_if_slice(Node::leaf(Kind::Current), index, true)
                }
                (Tok::Star, Tok::RBracket) => {
                    self.pos += 2;
                    let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
                    self.mk(Kind::Projection(
                        Box::new(Node::leaf(Kind::Current)),
                        Box::new(rhs),
                    ))
                }
                _ => self.multi_list(),
            },
            Tok::LBrace => self.multi_hash(),
            Tok::LParen => {
                let inner = self.expression(0)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Not => {
                let inner = self.expression(binding_power(&Tok::Not))?;
                self.mk(Kind::Not(Box::new(inner)))
            }
            Tok::Amp => {
                let inner = self.expression(0)?;
                self.mk(Kind::ExpRef(Box::new(inner)))
            }
            other => {
                self.pos = self.pos.saturating_sub(1);
                Err(self.error(
                    offset,
                    format!("unexpected {}; expected an expression", other.describe()),
                ))
            }
        }
    }

    fn led(&mut self, left: Node) -> PResult<Node> {
        let offset = self.offset();
        let tok = self.next();
        match tok {
            Tok::Dot => {
                let rhs = self.dot_rhs(binding_power(&Tok::Dot))?;
                match field_path(left, rhs) {
                    Ok(path) => Ok(path),
                    Err((left, rhs)) => self.mk(Kind::Sub(Box::new(left), Box::new(rhs))),
                }
            }
            Tok::Pipe => {
                let rhs = self.expression(binding_power(&Tok::Pipe))?;
                self.mk(Kind::Pipe(Box::new(left), Box::new(rhs)))
            }
            Tok::Or => {
                let rhs = self.expression(binding_power(&Tok::Or))?;
                self.mk(Kind::Or(Box::new(left), Box::new(rhs)))
            }
            Tok::And => {
                let rhs = self.expression(binding_power(&Tok::And))?;
                self.mk(Kind::And(Box::new(left), Box::new(rhs)))
            }
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                let op = match tok {
                    Tok::Eq => Cmp::Eq,
                    Tok::Ne => Cmp::Ne,
                    Tok::Lt => Cmp::Lt,
                    Tok::Le => Cmp::Le,
                    Tok::Gt => Cmp::Gt,
                    _ => Cmp::Ge,
                };
                let rhs = self.expression(5)?;
                self.mk(Kind::Compare(op, Box::new(left), Box::new(rhs)))
            }
            Tok::Flatten => self.flatten(left),
            Tok::Filter => self.filter(left),
            Tok::LBracket => match self.peek() {
                Tok::Number(_) | Tok::Colon => {
                    let index = self.index_expression()?;
                    self.project_if_slice(left, index, false)
                }
                Tok::Star if self.peek_at(1) == &Tok::RBracket => {
                    self.pos += 2;
                    let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
                    self.mk(Kind::Projection(Box::new(left), Box::new(rhs)))
                }
                _ => Err(self.unexpected("a number, ':' or '*' inside '[ ]'")),
            },
            Tok::LParen => Err(self.error(
                offset,
                "'(' must follow a function name (an unquoted identifier)".to_owned(),
            )),
            other => {
                self.pos = self.pos.saturating_sub(1);
                Err(self.error(
                    offset,
                    format!(
                        "unexpected {}; expected an operator or the end of the expression",
                        other.describe()
                    ),
                ))
            }
        }
    }

    fn flatten(&mut self, left: Node) -> PResult<Node> {
        let flat = self.mk(Kind::Flatten(Box::new(left)))?;
        let rhs = self.projection_rhs(binding_power(&Tok::Flatten))?;
        self.mk(Kind::Projection(Box::new(flat), Box::new(rhs)))
    }

    fn filter(&mut self, left: Node) -> PResult<Node> {
        let cond = self.expression(0)?;
        self.expect(Tok::RBracket, "']' to close the filter")?;
        let rhs = self.projection_rhs(binding_power(&Tok::Filter))?;
        self.mk(Kind::Filter {
            lhs: Box::new(left),
            cond: Box::new(cond),
            rhs: Box::new(rhs),
        })
    }

    /// After a projection: what is applied to each element.
    fn projection_rhs(&mut self, bp: u8) -> PResult<Node> {
        let next = self.peek();
        if binding_power(next) < PROJECTION_STOP {
            return Ok(Node::leaf(Kind::Current));
        }
        match next {
            Tok::LBracket | Tok::Filter => self.expression(bp),
            Tok::Dot => {
                self.pos += 1;
                self.dot_rhs(bp)
            }
            _ => Err(self.unexpected("'.', '[' or '[?' after a projection")),
        }
    }

    fn dot_rhs(&mut self, bp: u8) -> PResult<Node> {
        match self.peek() {
            Tok::Ident(_) | Tok::Quoted(_) | Tok::Star => self.expression(bp),
            Tok::LBracket => {
                self.pos += 1;
                self.multi_list()
            }
            Tok::LBrace => {
                self.pos += 1;
                self.multi_hash()
            }
            _ => Err(self.unexpected("an identifier, '*', '[' or '{' after '.'")),
        }
    }

    /// After `[`, at a number or ':'.
    fn index_expression(&mut self) -> PResult<Node> {
        if self.peek() == &Tok::Colon || self.peek_at(1) == &Tok::Colon {
            return self.slice();
        }
        let Tok::Number(n) = self.next() else {
            self.pos = self.pos.saturating_sub(1);
            return Err(self.unexpected("an index"));
        };
        self.expect(Tok::RBracket, "']' after the index")?;
        Ok(Node::leaf(Kind::Index(n)))
    }

    fn slice(&mut self) -> PResult<Node> {
        let start_offset = self.offset();
        let mut parts: [Option<i64>; 3] = [None; 3];
        let mut idx = 0;
        loop {
            match self.peek().clone() {
                Tok::RBracket => break,
                Tok::Colon => {
                    idx += 1;
                    if idx > 2 {
                        return Err(self.unexpected("']' (a slice has at most 3 parts)"));
                    }
                    self.pos += 1;
                }
                Tok::Number(n) => {
                    if parts[idx].is_some() {
                        return Err(self.unexpected("':' or ']'"));
                    }
                    parts[idx] = Some(n);
                    self.pos += 1;
                }
                _ => return Err(self.unexpected("a number, ':' or ']' in a slice")),
            }
        }
        self.pos += 1;
        let step = parts[2].unwrap_or(1);
        if step == 0 {
            return Err(self.error(
                start_offset,
                "Error: invalid-value, a slice projection step cannot be 0.".to_owned(),
            ));
        }
        Ok(Node::leaf(Kind::Slice {
            start: parts[0],
            stop: parts[1],
            step,
        }))
    }

    fn project_if_slice(&mut self, left: Node, index: Node, bare: bool) -> PResult<Node> {
        let is_slice = matches!(index.kind, Kind::Slice { .. });
        let indexed = if bare {
            index
        } else {
            self.mk(Kind::Sub(Box::new(left), Box::new(index)))?
        };
        if is_slice {
            let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
            self.mk(Kind::Projection(Box::new(indexed), Box::new(rhs)))
        } else {
            Ok(indexed)
        }
    }

    /// After `[` of a multi-select list.
    fn multi_list(&mut self) -> PResult<Node> {
        let mut items = Vec::new();
        loop {
            items.push(self.expression(0)?);
            match self.peek() {
                Tok::Comma => self.pos += 1,
                Tok::RBracket => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected("',' or ']' in a multi-select list")),
            }
        }
        self.mk(Kind::MultiList(items))
    }

    /// After `{` of a multi-select hash.
    fn multi_hash(&mut self) -> PResult<Node> {
        let mut items: Vec<(Arc<str>, Node)> = Vec::new();
        loop {
            let key_offset = self.offset();
            let key: Arc<str> = match self.next() {
                Tok::Ident(k) | Tok::Quoted(k) => k.into(),
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(self.unexpected("a key (identifier) in a multi-select hash"));
                }
            };
            if items.iter().any(|(k, _)| *k == key) {
                return Err(self.error(
                    key_offset,
                    format!("duplicate key '{key}' in a multi-select hash"),
                ));
            }
            self.expect(Tok::Colon, "':' after the key")?;
            let value = self.expression(0)?;
            items.push((key, value));
            match self.peek() {
                Tok::Comma => self.pos += 1,
                Tok::RBrace => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected("',' or '}' in a multi-select hash")),
            }
        }
        self.mk(Kind::MultiHash(items))
    }

    /// After the function name, at `(`.
    fn function(&mut self, name: String, offset: usize) -> PResult<Node> {
        self.pos += 1;
        let mut args = Vec::new();
        if self.peek() == &Tok::RParen {
            self.pos += 1;
        } else {
            loop {
                args.push(self.expression(0)?);
                match self.peek() {
                    Tok::Comma => self.pos += 1,
                    Tok::RParen => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.unexpected("',' or ')' in the function arguments")),
                }
            }
        }
        let func = Func::lookup(&name).ok_or_else(|| {
            self.error(
                offset,
                format!("Error: unknown-function, no function named {name} has been registered."),
            )
        })?;
        let (expected, variadic) = func.arity();
        let actual = args.len();
        if actual < expected || (!variadic && actual > expected) {
            let more = if variadic { "or more " } else { "" };
            let only = if variadic { "only " } else { "" };
            let report = if actual == 0 {
                "none".to_owned()
            } else {
                format!("{only}{actual}")
            };
            let plural = if expected > 1 { "s" } else { "" };
            return Err(self.error(
                offset,
                format!(
                    "Error: invalid-arity, the function {name} expects {expected} argument{plural} {more}but {report} were supplied."
                ),
            ));
        }
        self.mk(Kind::Call(func, args))
    }
}

/// `a.b` where both sides are fields or field paths becomes one path node (built in place, so
/// long chains stay linear).
fn field_path(left: Node, right: Node) -> Result<Node, (Node, Node)> {
    match (left.kind, right.kind) {
        (Kind::Field(a), Kind::Field(b)) => Ok(Node::leaf(Kind::Path(vec![a, b]))),
        (Kind::Path(mut names), Kind::Field(b)) => {
            names.push(b);
            Ok(Node::leaf(Kind::Path(names)))
        }
        (Kind::Field(a), Kind::Path(mut names)) => {
            names.insert(0, a);
            Ok(Node::leaf(Kind::Path(names)))
        }
        (Kind::Path(mut names), Kind::Path(more)) => {
            names.extend(more);
            Ok(Node::leaf(Kind::Path(names)))
        }
        (l, r) => Err((
            Node {
                kind: l,
                depth: left.depth,
            },
            Node {
                kind: r,
                depth: right.depth,
            },
        )),
    }
}

/// Parses the JSON text of a backtick literal (strict JSON, like JmesPath.Net's checker).
fn parse_literal(text: &str) -> Result<Lit, String> {
    let mut p = LitParser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let value = p.value(0)?;
    p.ws();
    if p.pos != p.bytes.len() {
        return Err(p.fail("unexpected text after the JSON value"));
    }
    Ok(value)
}

struct LitParser<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
}

impl LitParser<'_> {
    fn fail(&self, what: &str) -> String {
        format!(
            "the literal `{}` is not valid JSON: {what} at offset {}",
            self.text, self.pos
        )
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        self.ws();
        match self.bytes.get(self.pos) {
            Some(b'{') | Some(b'[') if depth >= MAX_LITERAL_DEPTH => Err(format!(
                "the literal nests more than {MAX_LITERAL_DEPTH} arrays/objects deep"
            )),
            Some(b'{') => {
                self.pos += 1;
                let mut members: Vec<(Arc<str>, Lit)> = Vec::new();
                self.ws();
                if self.bytes.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Lit::Object(members.into()));
                }
                loop {
                    self.ws();
                    if self.bytes.get(self.pos) != Some(&b'"') {
                        return Err(self.fail("expected a member name"));
                    }
                    let key: Arc<str> = self.string()?.into();
                    self.ws();
                    if self.bytes.get(self.pos) != Some(&b':') {
                        return Err(self.fail("expected ':'"));
                    }
                    self.pos += 1;
                    let value = self.value(depth + 1)?;
                    // Newtonsoft: a repeated name replaces the earlier value in place.
                    match members.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => members.push((key, value)),
                    }
                    self.ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Lit::Object(members.into()));
                        }
                        _ => return Err(self.fail("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.bytes.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Lit::Array(items.into()));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Lit::Array(items.into()));
                        }
                        _ => return Err(self.fail("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => Ok(Lit::Str(self.string()?.into())),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => {
                for (word, lit) in [
                    ("true", Lit::Bool(true)),
                    ("false", Lit::Bool(false)),
                    ("null", Lit::Null),
                ] {
                    if self.bytes[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(lit);
                    }
                }
                Err(self.fail("expected a JSON value"))
            }
        }
    }

    /// At `"`: reads and unescapes a string.
    fn string(&mut self) -> Result<String, String> {
        let start = self.pos + 1;
        let mut i = start;
        while i < self.bytes.len() {
            match self.bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    let inner = &self.text[start..i];
                    self.pos = i + 1;
                    return unescape_json_string(inner).map_err(|m| self.fail(&m));
                }
                _ => i += 1,
            }
        }
        Err(self.fail("unterminated string"))
    }

    fn number(&mut self) -> Result<Lit, String> {
        let start = self.pos;
        let b = self.bytes;
        let mut i = self.pos;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(self.fail("invalid number")),
        }
        let mut integral = true;
        if b.get(i) == Some(&b'.') {
            integral = false;
            i += 1;
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(self.fail("invalid number"));
            }
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            integral = false;
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(self.fail("invalid number"));
            }
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        self.pos = i;
        let text = &self.text[start..i];
        if integral {
            if let Ok(v) = text.parse::<i64>() {
                return Ok(Lit::Int(v));
            }
            if let Ok(v) = text.parse::<u64>() {
                return Ok(Lit::UInt(v));
            }
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Lit::Float(f)),
            _ => Err(self.fail("number out of range")),
        }
    }
}
