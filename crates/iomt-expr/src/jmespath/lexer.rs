//! Tokenizer for JMESPath expressions.

/// One token, with the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// `foo` (unquoted identifier).
    Ident(String),
    /// `"foo"` (quoted identifier, unescaped).
    Quoted(String),
    /// `-?[0-9]+` (indices and slices).
    Number(i64),
    /// `` `json` `` with the inner text (backtick escapes resolved).
    Literal(String),
    /// `'raw'` with `\'` resolved.
    Raw(String),
    Dot,
    Star,
    /// `[]`
    Flatten,
    /// `[?`
    Filter,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Colon,
    Pipe,
    Or,
    And,
    Not,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    At,
    Amp,
    Eof,
}

impl Tok {
    /// How the token reads in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier '{s}'"),
            Tok::Quoted(s) => format!("quoted identifier \"{s}\""),
            Tok::Number(n) => format!("number {n}"),
            Tok::Literal(_) => "a `literal`".to_owned(),
            Tok::Raw(_) => "a 'raw string'".to_owned(),
            Tok::Eof => "the end of the expression".to_owned(),
            other => format!("'{}'", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Dot => ".",
            Tok::Star => "*",
            Tok::Flatten => "[]",
            Tok::Filter => "[?",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Pipe => "|",
            Tok::Or => "||",
            Tok::And => "&&",
            Tok::Not => "!",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::At => "@",
            Tok::Amp => "&",
            _ => "?",
        }
    }
}

/// A lexing failure: message and byte offset.
pub(crate) struct LexError {
    pub(crate) message: String,
    pub(crate) offset: usize,
}

/// Splits `text` into tokens (the last one is [`Tok::Eof`]).
pub(crate) fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, LexError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(text.len() / 2 + 1);
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x08 | 0x0c => {
                i += 1;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Tok::Ident(text[start..i].to_owned())
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let digits = &text[start..i];
                if digits == "-" {
                    return Err(LexError {
                        message: "'-' must be followed by digits".to_owned(),
                        offset: start,
                    });
                }
                match digits.parse::<i64>() {
                    Ok(n) => Tok::Number(n),
                    Err(_) => {
                        return Err(LexError {
                            message: format!("number {digits} is out of range"),
                            offset: start,
                        });
                    }
                }
            }
            b'"' => {
                let (end, value) = quoted(text, start)?;
                i = end;
                Tok::Quoted(value)
            }
            b'\'' => {
                let end = delimited(bytes, start, b'\'').ok_or_else(|| LexError {
                    message: "unterminated raw string (missing closing ')".to_owned(),
                    offset: start,
                })?;
                i = end + 1;
                Tok::Raw(text[start + 1..end].replace("\\'", "'"))
            }
            b'`' => {
                let end = delimited(bytes, start, b'`').ok_or_else(|| LexError {
                    message: "unterminated literal (missing closing `)".to_owned(),
                    offset: start,
                })?;
                i = end + 1;
                Tok::Literal(text[start + 1..end].replace("\\`", "`"))
            }
            b'[' => {
                i += 1;
                match bytes.get(i) {
                    Some(b']') => {
                        i += 1;
                        Tok::Flatten
                    }
                    Some(b'?') => {
                        i += 1;
                        Tok::Filter
                    }
                    _ => Tok::LBracket,
                }
            }
            b'|' => two(bytes, &mut i, b'|', Tok::Or, Tok::Pipe),
            b'&' => two(bytes, &mut i, b'&', Tok::And, Tok::Amp),
            b'!' => two(bytes, &mut i, b'=', Tok::Ne, Tok::Not),
            b'<' => two(bytes, &mut i, b'=', Tok::Le, Tok::Lt),
            b'>' => two(bytes, &mut i, b'=', Tok::Ge, Tok::Gt),
            b'=' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Eq
                } else {
                    return Err(LexError {
                        message: "'=' is not an operator; use '==' to compare".to_owned(),
                        offset: start,
                    });
                }
            }
            _ => {
                let single = match c {
                    b'.' => Some(Tok::Dot),
                    b'*' => Some(Tok::Star),
                    b']' => Some(Tok::RBracket),
                    b'{' => Some(Tok::LBrace),
                    b'}' => Some(Tok::RBrace),
                    b'(' => Some(Tok::LParen),
                    b')' => Some(Tok::RParen),
                    b',' => Some(Tok::Comma),
                    b':' => Some(Tok::Colon),
                    b'@' => Some(Tok::At),
                    _ => None,
                };
                match single {
                    Some(t) => {
                        i += 1;
                        t
                    }
                    None => {
                        let ch = text[start..].chars().next().unwrap_or('?');
                        return Err(LexError {
                            message: format!("unexpected character '{}'", ch.escape_debug()),
                            offset: start,
                        });
                    }
                }
            }
        };
        out.push((tok, start));
    }
    out.push((Tok::Eof, text.len()));
    Ok(out)
}

fn two(bytes: &[u8], i: &mut usize, second: u8, double: Tok, single: Tok) -> Tok {
    if bytes.get(*i + 1) == Some(&second) {
        *i += 2;
        double
    } else {
        *i += 1;
        single
    }
}

/// Index of the closing `delim` of a token opened at `start`; a backslash escapes the next byte.
fn delimited(bytes: &[u8], start: usize, delim: u8) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == delim => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Reads a JSON-style quoted identifier starting at `start`; returns the offset after it and
/// its unescaped text.
fn quoted(text: &str, start: usize) -> Result<(usize, String), LexError> {
    let bytes = text.as_bytes();
    let end = delimited(bytes, start, b'"').ok_or_else(|| LexError {
        message: "unterminated quoted identifier (missing closing \")".to_owned(),
        offset: start,
    })?;
    let inner = &text[start + 1..end];
    let value = unescape_json_string(inner).map_err(|message| LexError {
        message: format!("invalid quoted identifier: {message}"),
        offset: start,
    })?;
    Ok((end + 1, value))
}

/// Unescapes the inside of a JSON string (without the quotes).
pub(crate) fn unescape_json_string(inner: &str) -> Result<String, String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let hi = hex4(&mut chars)?;
                    if (0xD800..0xDC00).contains(&hi) {
                        if chars.next() != Some('\\') || chars.next() != Some('u') {
                            return Err(
                                "a high surrogate escape must be followed by a low one".to_owned()
                            );
                        }
                        let lo = hex4(&mut chars)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err("invalid low surrogate escape".to_owned());
                        }
                        let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        out.push(char::from_u32(cp).ok_or("invalid unicode escape")?);
                    } else {
                        out.push(char::from_u32(hi).ok_or("unpaired low surrogate escape")?);
                    }
                }
                Some(other) => return Err(format!("invalid escape '\\{other}'")),
                None => return Err("dangling backslash".to_owned()),
            },
            c if (c as u32) < 0x20 => {
                return Err("control characters must be escaped".to_owned());
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, String> {
    let mut v = 0u32;
    for _ in 0..4 {
        let d = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or_else(|| "\\u must be followed by 4 hex digits".to_owned())?;
        v = v * 16 + d;
    }
    Ok(v)
}
