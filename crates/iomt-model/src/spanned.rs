//! A JSON reader that remembers where every value and member name stands in the file.
//!
//! Mapping files are written by hand, and users fix them from error messages, so every error
//! must say the line and column of what is wrong, and *all* errors must be reported at once
//! (the original stopped at the first one per template). `serde_json` reports only the first
//! error and no positions for well-formed but wrong documents, so mapping loaders read a
//! [`Node`] tree from this module and check it field by field with [`ObjectReader`].
//!
//! Positions are 1-based lines and columns of the first character of the value or member name,
//! counted in characters (not bytes). A UTF-8 byte-order mark at the start is skipped (the
//! original's sample files have one).
//!
//! # Invariants
//! * Parsing never panics and never recurses deeper than [`MAX_DEPTH`].
//! * Member order is the file's order; duplicate member names are kept (loaders decide).

use std::fmt;

/// How deeply arrays and objects may nest before the document is rejected.
pub const MAX_DEPTH: usize = 128;

/// A position in a text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A JSON value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: NodeValue,
}

/// A member name with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Where the name starts (its opening quote).
    pub pos: Pos,
    /// The name.
    pub name: String,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, with its text as written.
    Number(String),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Node>),
    /// An object, members in file order.
    Object(Vec<(Key, Node)>),
}

impl Node {
    /// The JSON type's name, for messages: `null`, `boolean`, `number`, `string`, `array`,
    /// `object`.
    pub fn kind(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "boolean",
            NodeValue::Number(_) => "number",
            NodeValue::String(_) => "string",
            NodeValue::Array(_) => "array",
            NodeValue::Object(_) => "object",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            NodeValue::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, NodeValue::Null)
    }

    /// Converts to a `serde_json::Value` (positions dropped; duplicate names: last wins).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Array(a) => Value::Array(a.iter().map(Node::to_json).collect()),
            NodeValue::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Why a text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.message, self.pos)
    }
}

impl std::error::Error for SyntaxError {}

/// Parses a whole document.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        chars: text.char_indices().peekable(),
        text,
        line: 1,
        column: 1,
    };
    p.skip_ws();
    let node = p.value(0)?;
    p.skip_ws();
    if p.peek().is_some() {
        return Err(p.error("unexpected text after the json value"));
    }
    Ok(node)
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
    line: u32,
    column: u32,
}

impl Parser<'_> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn error(&self, message: &str) -> SyntaxError {
        SyntaxError {
            pos: self.pos(),
            message: message.to_owned(),
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn bump(&mut self) -> Option<char> {
        let (_, c) = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | '\r' => {
                    self.bump();
                }
                '/' => {
                    // Newtonsoft accepts comments in mapping files; so do we.
                    let rest = &self.text[self.chars.peek().map_or(self.text.len(), |&(i, _)| i)..];
                    if rest.starts_with("//") {
                        while let Some(c) = self.peek() {
                            if c == '\n' {
                                break;
                            }
                            self.bump();
                        }
                    } else if rest.starts_with("/*") {
                        self.bump();
                        self.bump();
                        let mut prev = ' ';
                        while let Some(c) = self.bump() {
                            if prev == '*' && c == '/' {
                                break;
                            }
                            prev = c;
                        }
                    } else {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<(), SyntaxError> {
        for expected in word.chars() {
            if self.peek() != Some(expected) {
                return Err(self.error(&format!("expected `{word}`")));
            }
            self.bump();
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error("json nests too deeply"));
        }
        let pos = self.pos();
        let value = match self.peek() {
            None => return Err(self.error("unexpected end of file, expected a json value")),
            Some('{') => {
                self.bump();
                let mut members = Vec::new();
                self.skip_ws();
                if self.peek() == Some('}') {
                    self.bump();
                } else {
                    loop {
                        self.skip_ws();
                        // Newtonsoft accepts a trailing comma; mappings written for it may have one.
                        if self.peek() == Some('}') {
                            self.bump();
                            break;
                        }
                        let key_pos = self.pos();
                        if self.peek() != Some('"') {
                            return Err(self.error("expected a member name in double quotes"));
                        }
                        let name = self.string()?;
                        self.skip_ws();
                        if self.bump() != Some(':') {
                            return Err(self.error("expected `:` after the member name"));
                        }
                        self.skip_ws();
                        let v = self.value(depth + 1)?;
                        members.push((Key { pos: key_pos, name }, v));
                        self.skip_ws();
                        match self.bump() {
                            Some(',') => continue,
                            Some('}') => break,
                            _ => return Err(self.error("expected `,` or `}` in an object")),
                        }
                    }
                }
                NodeValue::Object(members)
            }
            Some('[') => {
                self.bump();
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(']') {
                    self.bump();
                } else {
                    loop {
                        self.skip_ws();
                        if self.peek() == Some(']') {
                            self.bump();
                            break;
                        }
                        items.push(self.value(depth + 1)?);
                        self.skip_ws();
                        match self.bump() {
                            Some(',') => continue,
                            Some(']') => break,
                            _ => return Err(self.error("expected `,` or `]` in an array")),
                        }
                    }
                }
                NodeValue::Array(items)
            }
            Some('"') => NodeValue::String(self.string()?),
            Some('t') => {
                self.expect_word("true")?;
                NodeValue::Bool(true)
            }
            Some('f') => {
                self.expect_word("false")?;
                NodeValue::Bool(false)
            }
            Some('n') => {
                self.expect_word("null")?;
                NodeValue::Null
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let mut text = String::new();
                while let Some(c) = self.peek() {
                    if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                        text.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
                if serde_json::from_str::<serde_json::Number>(&text).is_err() {
                    return Err(SyntaxError {
                        pos,
                        message: format!("`{text}` is not a valid number"),
                    });
                }
                NodeValue::Number(text)
            }
            Some(_) => return Err(self.error("expected a json value")),
        };
        Ok(Node { pos, value })
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.bump(); // opening quote
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error("unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => {
                        let first = self.hex4()?;
                        let code = if (0xD800..0xDC00).contains(&first) {
                            if self.bump() != Some('\\') || self.bump() != Some('u') {
                                return Err(self.error("unpaired surrogate in \\u escape"));
                            }
                            let second = self.hex4()?;
                            if !(0xDC00..0xE000).contains(&second) {
                                return Err(self.error("unpaired surrogate in \\u escape"));
                            }
                            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                        } else {
                            first
                        };
                        match char::from_u32(code) {
                            Some(c) => out.push(c),
                            None => return Err(self.error("invalid \\u escape")),
                        }
                    }
                    _ => return Err(self.error("invalid escape in string")),
                },
                Some(c) if (c as u32) < 0x20 && c != '\t' => {
                    return Err(self.error("control character in string; escape it"));
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error("expected four hex digits in \\u escape"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }
}

/// Reads an object's members strictly: each member is taken at most once, names match exactly
/// first and then case-insensitively (as Newtonsoft does), and whatever was not taken is
/// reported by [`ObjectReader::unknown`].
pub struct ObjectReader<'a> {
    node: &'a Node,
    members: &'a [(Key, Node)],
    taken: Vec<bool>,
}

impl<'a> ObjectReader<'a> {
    /// Starts reading an object node; `None` if the node is not an object.
    pub fn new(node: &'a Node) -> Option<ObjectReader<'a>> {
        let members = node.as_object()?;
        Some(ObjectReader {
            node,
            members,
            taken: vec![false; members.len()],
        })
    }

    /// Where the object starts.
    pub fn pos(&self) -> Pos {
        self.node.pos
    }

    /// Takes the member called `name` (exact spelling first, then any case).
    pub fn take(&mut self, name: &str) -> Option<(&'a Key, &'a Node)> {
        let index = self
            .members
            .iter()
            .enumerate()
            .position(|(i, (k, _))| !self.taken[i] && k.name == name)
            .or_else(|| {
                self.members
                    .iter()
                    .enumerate()
                    .position(|(i, (k, _))| !self.taken[i] && k.name.eq_ignore_ascii_case(name))
            })?;
        self.taken[index] = true;
        let (k, v) = &self.members[index];
        Some((k, v))
    }

    /// Takes the member called `name` unless it is absent or `null`.
    pub fn take_non_null(&mut self, name: &str) -> Option<(&'a Key, &'a Node)> {
        self.take(name).filter(|(_, v)| !v.is_null())
    }

    /// The members not taken, in file order.
    pub fn unknown(&self) -> impl Iterator<Item = &'a Key> + '_ {
        self.members
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|((k, _), _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_values_and_names() {
        let doc = parse("\u{feff}{\n  \"a\": [1, {\"b\": null}],\n  \"c\": \"x\"\n}").unwrap();
        let members = doc.as_object().unwrap();
        assert_eq!(members[0].0.pos, Pos { line: 2, column: 3 });
        assert_eq!(members[0].1.pos, Pos { line: 2, column: 8 });
        assert_eq!(members[1].1.pos, Pos { line: 3, column: 8 });
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": [1, {"b": null}], "c": "x"})
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("{\n  \"a\": tru\n}").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(parse("[1,,]").is_err());
        assert!(parse("{,}").is_err());
        assert!(parse("{} x").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
        assert!(parse("\"\\ud800\"").is_err());
        assert!(parse("01x").is_err());
    }

    #[test]
    fn trailing_commas_are_accepted_like_newtonsoft() {
        assert_eq!(parse("[1,]").unwrap().to_json(), serde_json::json!([1]));
        assert_eq!(
            parse("{\"a\":1,}").unwrap().to_json(),
            serde_json::json!({"a": 1})
        );
    }

    #[test]
    fn comments_are_skipped() {
        let doc = parse("// hi\n{ /* a */ \"a\": 1 }").unwrap();
        assert_eq!(doc.to_json(), serde_json::json!({"a": 1}));
    }

    #[test]
    fn reader_matches_case_insensitively_and_reports_unknown() {
        let doc = parse(r#"{"TypeName": "x", "typeName2": 1, "other": 2}"#).unwrap();
        let mut r = ObjectReader::new(&doc).unwrap();
        assert_eq!(r.take("typeName").unwrap().1.as_str(), Some("x"));
        assert!(r.take("typeName").is_none());
        assert!(r.take("typename2").is_some());
        let unknown: Vec<_> = r.unknown().map(|k| k.name.as_str()).collect();
        assert_eq!(unknown, ["other"]);
    }
}
