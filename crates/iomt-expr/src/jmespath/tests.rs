//! Tests of the JMESPath engine: grammar, built-ins, JmesPath.Net specifics, the
//! `matchedToken` overlay, the original's custom-function cases and the official compliance
//! suite.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use serde_json::Value as Json;
use sonic_rs::JsonValueTrait;

use super::*;

fn doc(json: &str) -> Value {
    sonic_rs::from_str(json).expect("test document is valid JSON")
}

fn compile(expr: &str) -> JmesPath {
    JmesPath::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// Evaluates and returns the Newtonsoft-style JSON text.
fn search(expr: &str, data: &str) -> String {
    let data = doc(data);
    compile(expr)
        .search_json(&data)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn search_err(expr: &str, data: &str) -> JmesPathError {
    let data = doc(data);
    match compile(expr).search_json(&data) {
        Ok(v) => panic!("{expr}: expected an error, got {v}"),
        Err(e) => e,
    }
}

fn token_type(expr: &str, data: &str) -> TokenType {
    let data = doc(data);
    compile(expr)
        .evaluate(Scope::Token(&data))
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .token_type()
}

fn parse_error(expr: &str) -> String {
    match JmesPath::compile(expr) {
        Ok(_) => panic!("{expr}: expected a parse error"),
        Err(e @ JmesPathError::Parse { .. }) => e.to_string(),
        Err(e) => panic!("{expr}: expected a parse error, got {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Grammar

#[test]
fn identifiers_and_subexpressions() {
    let d = r#"{"a":{"b":{"c":1}},"foo bar":2,"x-y":3,"matchedToken":4}"#;
    assert_eq!(search("a.b.c", d), "1");
    assert_eq!(search("a.b", d), r#"{"c":1}"#);
    assert_eq!(search("a.z", d), "null");
    assert_eq!(search("a.b.c.d", d), "null");
    assert_eq!(search(r#""foo bar""#, d), "2");
    assert_eq!(search(r#""x-y""#, d), "3");
    assert_eq!(search(r#"a."b".c"#, d), "1");
    assert_eq!(search("@", r#"{"a":1}"#), r#"{"a":1}"#);
    assert_eq!(search("@.a", r#"{"a":1}"#), "1");
    assert_eq!(search("a", "[1]"), "null");
    assert_eq!(search(r#""\u0041""#, r#"{"A":5}"#), "5");
}

#[test]
fn index_and_slices() {
    let d = r#"{"a":[0,1,2,3,4,5]}"#;
    assert_eq!(search("a[0]", d), "0");
    assert_eq!(search("a[-1]", d), "5");
    assert_eq!(search("a[6]", d), "null");
    assert_eq!(search("a[-7]", d), "null");
    assert_eq!(search("a[1:3]", d), "[1,2]");
    assert_eq!(search("a[::2]", d), "[0,2,4]");
    assert_eq!(search("a[::-1]", d), "[5,4,3,2,1,0]");
    assert_eq!(search("a[-2:]", d), "[4,5]");
    assert_eq!(search("a[10:]", d), "[]");
    assert_eq!(search("a[:100:3]", d), "[0,3]");
    assert_eq!(search("a[5:1:-2]", d), "[5,3]");
    assert_eq!(search("[0]", "[7,8]"), "7");
    assert_eq!(search("[1:]", "[7,8]"), "[8]");
    assert_eq!(search("a[0]", r#"{"a":{"0":1}}"#), "null");
    assert!(parse_error("a[::0]").contains("step cannot be 0"));
}

#[test]
fn projections() {
    let d = r#"{"people":[{"name":"a","age":30},{"name":"b"},{"name":"c","age":40}]}"#;
    assert_eq!(search("people[*].age", d), "[30,40]");
    assert_eq!(search("people[*].name", d), r#"["a","b","c"]"#);
    assert_eq!(search("people[*]", r#"{"people":[1,null,2]}"#), "[1,2]");
    assert_eq!(search("people[*].age | [0]", d), "30");
    assert_eq!(search("people[*].age[0]", d), "[]");
    assert_eq!(search("people[0:2].name", d), r#"["a","b"]"#);
    assert_eq!(search("*.b", r#"{"x":{"b":1},"y":{"b":2},"z":3}"#), "[1,2]");
    assert_eq!(search("x.*", r#"{"x":{"b":1,"c":2}}"#), "[1,2]");
    assert_eq!(search("x.*", r#"{"x":[1]}"#), "null");
    assert_eq!(search("x[*]", r#"{"x":{"a":1}}"#), "null");
    // nested projections keep their structure
    assert_eq!(
        search(
            "a[*].b[*].c",
            r#"{"a":[{"b":[{"c":1},{"c":2}]},{"b":[{"c":3}]}]}"#
        ),
        "[[1,2],[3]]"
    );
    assert_eq!(
        search(
            "a[*].b[].c",
            r#"{"a":[{"b":[{"c":1},{"c":2}]},{"b":[{"c":3}]}]}"#
        ),
        "[1,2,3]"
    );
}

#[test]
fn flatten() {
    assert_eq!(search("[]", "[[1,2],[3],4,null,[null,5]]"), "[1,2,3,4,5]");
    assert_eq!(search("a[]", r#"{"a":[[1],[[2]]]}"#), "[1,[2]]");
    assert_eq!(search("a[][]", r#"{"a":[[1],[[2]]]}"#), "[1,2]");
    assert_eq!(search("a[]", r#"{"a":1}"#), "null");
    assert_eq!(search("a[].b", r#"{"a":[[{"b":1}],{"b":2}]}"#), "[1,2]");
}

#[test]
fn filters_and_comparators() {
    let d = r#"{"m":[{"v":1,"u":"x"},{"v":2.5,"u":"y"},{"v":3,"u":"x"},{"u":"z"}]}"#;
    assert_eq!(search("m[?v > `1`].v", d), "[2.5,3]");
    assert_eq!(search("m[?v >= `1`].v", d), "[1,2.5,3]");
    assert_eq!(search("m[?v < `3`].v", d), "[1,2.5]");
    assert_eq!(search("m[?v <= `1`].v", d), "[1]");
    assert_eq!(search("m[?u == 'x'].v", d), "[1,3]");
    assert_eq!(search("m[?u != 'x'].u", d), r#"["y","z"]"#);
    assert_eq!(search("m[?v].u", d), r#"["x","y","x"]"#);
    assert_eq!(search("m[?!v].u", d), r#"["z"]"#);
    assert_eq!(search("m[?v && u == 'x'].v", d), "[1,3]");
    assert_eq!(search("m[?v == `3` || u == 'z'].u", d), r#"["x","z"]"#);
    assert_eq!(search("m[?`true`] | length(@)", d), "4");
    assert_eq!(search("[?@ > `1`]", "[1,2,3]"), "[2,3]");
    assert_eq!(search("a[?b]", r#"{"a":{"b":1}}"#), "null");
    // comparing incompatible types yields null (falsy)
    assert_eq!(search("`1` < 'a'", "{}"), "null");
    assert_eq!(search("`[1]` == `[1]`", "{}"), "true");
    assert_eq!(
        search(r#"`{"a":1,"b":2}` == `{"b":2,"a":1}`"#, "{}"),
        "true"
    );
}

#[test]
fn boolean_operators() {
    assert_eq!(search("a || b", r#"{"a":null,"b":2}"#), "2");
    assert_eq!(search("a || b", r#"{"a":[],"b":2}"#), "2");
    assert_eq!(search("a || b", r#"{"a":"x","b":2}"#), r#""x""#);
    assert_eq!(search("a && b", r#"{"a":"","b":2}"#), r#""""#);
    assert_eq!(search("a && b", r#"{"a":0,"b":2}"#), "2");
    assert_eq!(search("!a", r#"{"a":{}}"#), "true");
    assert_eq!(search("!a", r#"{"a":false}"#), "true");
    assert_eq!(search("!!a", r#"{"a":0}"#), "true");
    assert_eq!(search("a || b && c", r#"{"a":0,"b":1,"c":2}"#), "0");
    assert_eq!(search("(a || b) && c", r#"{"a":null,"b":1,"c":2}"#), "2");
}

#[test]
fn pipes_and_multiselect() {
    let d = r#"{"a":{"b":1,"c":[1,2]},"d":"x"}"#;
    assert_eq!(search("a | b", d), "1");
    assert_eq!(search("[d, a.b]", d), r#"["x",1]"#);
    assert_eq!(search("{x: d, y: a.c[1]}", d), r#"{"x":"x","y":2}"#);
    assert_eq!(search("a.[b, c]", d), "[1,[1,2]]");
    assert_eq!(search("a.{bb: b}", d), r#"{"bb":1}"#);
    assert_eq!(search("missing.[a]", d), "null");
    assert_eq!(search("missing.{a: a}", d), "null");
    assert_eq!(search("missing | [@]", d), "null");
    assert_eq!(search("missing | to_array(@)", d), "[null]");
    assert_eq!(search("missing.to_array(@)", d), "null");
    assert_eq!(search(r#"{"q k": d}"#, d), r#"{"q k":"x"}"#);
    assert_eq!(
        search(
            "people[*].[name, age]",
            r#"{"people":[{"name":"a","age":1}]}"#
        ),
        r#"[["a",1]]"#
    );
    assert!(parse_error("{a: a, a: b}").contains("duplicate key"));
}

#[test]
fn literals_and_raw_strings() {
    assert_eq!(search("`\"foo\"`", "{}"), r#""foo""#);
    assert_eq!(search("`[1, 2.5, \"x\"]`", "{}"), r#"[1,2.5,"x"]"#);
    assert_eq!(search(r#"`{"b": 1, "a": 2}`"#, "{}"), r#"{"b":1,"a":2}"#);
    assert_eq!(search("`\"a\\`b\"`", "{}"), r#""a`b""#);
    assert_eq!(search("'it\\'s'", "{}"), r#""it's""#);
    assert_eq!(search("'\\z'", "{}"), r#""\\z""#);
    assert_eq!(search("`  true  `", "{}"), "true");
    assert_eq!(token_type("`1`", "{}"), TokenType::Integer);
    assert_eq!(token_type("`1.0`", "{}"), TokenType::Float);
    assert_eq!(token_type("`1e2`", "{}"), TokenType::Float);
    assert!(parse_error("`foo`").contains("not valid JSON"));
    assert!(parse_error("foo.`\"bar\"`").contains("could not be parsed"));
}

#[test]
fn expression_references_and_functions_on_projections() {
    let d = r#"{"a":[{"n":2},{"n":1},{"n":3}]}"#;
    assert_eq!(search("sort_by(a, &n)[*].n", d), "[1,2,3]");
    assert_eq!(search("map(&n, a)", d), "[2,1,3]");
    assert_eq!(search("map(&missing, a)", d), "[null,null,null]");
    assert_eq!(search("a[*].n | sum(@)", d), "6");
    assert_eq!(search("length(a[?n > `1`])", d), "2");
    assert_eq!(search("a[*].to_string(n)", d), r#"["2","1","3"]"#);
}

#[test]
fn parse_errors_are_reported_with_the_original_prefix() {
    for bad in [
        "",
        "a.",
        "a[",
        "a]",
        "[?a",
        "a[*",
        "a b",
        "a..b",
        "'abc",
        "`1",
        "\"ab",
        "a ==",
        "(a",
        "{a}",
        "{a: }",
        "a[1:2:3:4]",
        "foo(",
        "a = b",
        "-",
        "a[?]",
        "!",
        "&",
        "@@",
        "a.1",
        "a.[]",
        "\"a\"()",
        "[a,]",
        "a[-]",
        "(a) (b)",
        "a.{}",
    ] {
        let msg = parse_error(bad);
        assert!(
            msg.starts_with("the following JmesPath expression could not be parsed: "),
            "{bad}: {msg}"
        );
        assert!(msg.contains(". cause: "), "{bad}: {msg}");
    }
    let msg = parse_error("nope(a)");
    assert!(
        msg.contains("Error: unknown-function, no function named nope"),
        "{msg}"
    );
    let msg = parse_error("add(a)");
    assert!(
        msg.contains(
            "Error: invalid-arity, the function add expects 2 arguments but 1 were supplied."
        ),
        "{msg}"
    );
    let msg = parse_error("merge()");
    assert!(
        msg.contains("the function merge expects 1 argument or more but none were supplied."),
        "{msg}"
    );
    assert!(parse_error("a b").contains("column 3"));
}

#[test]
fn deep_nesting_is_rejected_not_overflowing() {
    let deep_parens = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse_error(&deep_parens).contains("nests more than"));
    let deep_not = format!("{}a", "!".repeat(10_000));
    assert!(parse_error(&deep_not).contains("nests more than"));
    let long_chain = vec!["a[0]"; 20_000].join(".");
    assert!(parse_error(&long_chain).contains("nests more than"));
    // a chain of plain fields is one flat path: no depth, evaluated in a loop
    let long_path = vec!["a"; 20_000].join(".");
    assert_eq!(search(&long_path, r#"{"a":{"a":1}}"#), "null");
    let long_pipe = vec!["a"; 20_000].join(" | ");
    assert!(parse_error(&long_pipe).contains("nests more than"));
    let deep_literal = format!("`{}1{}`", "[".repeat(1000), "]".repeat(1000));
    assert!(parse_error(&deep_literal).contains("nests more than"));
    let deep_list = format!("{}a{}", "[".repeat(5000), "]".repeat(5000));
    assert!(parse_error(&deep_list).contains("nests more than"));
    // a moderately long flat chain is fine
    let ok = vec!["a"; 60].join(".");
    assert_eq!(search(&ok, "{}"), "null");
}

#[test]
fn deeply_nested_documents_do_not_overflow() {
    // sonic-rs itself needs a large stack to parse this in debug builds.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let depth = 3000;
            let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let data = doc(&deep);
            let err = compile("to_string(@)").search_json(&data).unwrap_err();
            assert!(
                matches!(err, JmesPathError::NestingTooDeep { .. }),
                "{err:?}"
            );
            let err = compile("@ == @").search_json(&data).unwrap_err();
            assert!(
                matches!(err, JmesPathError::NestingTooDeep { .. }),
                "{err:?}"
            );
            assert_eq!(compile("length(@)").search_json(&data).unwrap(), "1");
            let merged = compile("length(merge(`{}`, {a: @}, {a: @}).a)").search_json(&data);
            assert_eq!(merged.unwrap(), "2", "arrays concatenate without recursing");
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn deepest_expressions_evaluate_on_a_default_stack() {
    // The deepest values an expression can build (a deep literal wrapped by nested calls)
    // and the deepest syntax trees must not overflow a test thread's 2 MiB stack.
    let literal = format!("`{}1{}`", "[".repeat(60), "]".repeat(60));
    let wrapped = format!("{}{literal}{}", "to_array([".repeat(31), "])".repeat(31));
    let e = compile(&format!("to_string({wrapped})"));
    assert!(e.search_json(&doc("{}")).is_ok());
    let e = compile(&format!("{wrapped} == {wrapped}"));
    assert_eq!(e.search_json(&doc("{}")).unwrap(), "true");
    let shallower = format!("{}{literal}{}", "to_array([".repeat(29), "])".repeat(29));
    let e = compile(&format!(
        "merge({{a: {shallower}}}, {{a: {{b: {shallower}}}}})"
    ));
    assert!(e.search_json(&doc("{}")).is_ok());
    let projections = format!("a{}", "[*].a".repeat(62));
    assert_eq!(
        compile(&projections)
            .search_json(&doc(r#"{"a":[]}"#))
            .unwrap(),
        "[]"
    );
    let filters = format!("a{}", "[?a].a".repeat(60));
    assert_eq!(
        compile(&filters).search_json(&doc(r#"{"a":[]}"#)).unwrap(),
        "[]"
    );
    let nots = format!("{}a", "!".repeat(62));
    assert_eq!(compile(&nots).search_json(&doc("{}")).unwrap(), "false");
    let ors = format!("{}a{}", "(b || ".repeat(31), ")".repeat(31));
    assert_eq!(compile(&ors).search_json(&doc(r#"{"a":1}"#)).unwrap(), "1");
}

#[test]
fn never_panics_on_garbage() {
    // A tiny deterministic fuzzer over the token alphabet.
    let atoms = [
        "a",
        "b",
        ".",
        "*",
        "[",
        "]",
        "[]",
        "[?",
        "{",
        "}",
        "(",
        ")",
        ",",
        ":",
        "|",
        "||",
        "&&",
        "!",
        "==",
        "<",
        ">=",
        "@",
        "&",
        "`1`",
        "'x'",
        "\"q\"",
        "0",
        "-1",
        "length",
        "add",
        "sort_by",
        " ",
        "`[1,{\"a\":2}]`",
        "to_array",
        "merge",
        "map",
        "\\",
        "'",
        "\"",
        "`",
        "\u{e9}",
        "\u{1F600}",
        "\u{0}",
        "-",
        "99999999999999999999",
        "[1:2:-1]",
        "[-9:]",
        "insertString",
        "fromUnixTimestampMs",
        "pow",
        "divide",
        "to_number",
        "`1.5`",
        "`-1`",
        "?",
        "=",
        "\\u12",
        "\\'",
    ];
    let data = doc(r#"{"a":[{"a":1,"b":[1,2]},{"b":"x"}],"b":{"a":[[1],[2]]}}"#);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut compiled = 0;
    let rounds: usize = std::env::var("JMESPATH_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for _ in 0..rounds {
        let mut text = String::new();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 12) as usize + 1;
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(atoms[(seed % atoms.len() as u64) as usize]);
        }
        if let Ok(expr) = JmesPath::compile(&text) {
            compiled += 1;
            let _ = expr.search_json(&data);
            let _ = expr.select_one(Scope::WithMatch {
                root: &data,
                matched: &data,
            });
            let _ = expr.select_matches(&data);
        }
    }
    println!("fuzz: {compiled} of {rounds} random expressions compiled and ran");
    assert!(
        compiled > 100,
        "only {compiled} random expressions compiled"
    );
}

// ---------------------------------------------------------------------------------------------
// Built-in functions and JmesPath.Net typing

#[test]
fn builtin_numeric_functions() {
    assert_eq!(search("abs(`-3`)", "{}"), "3");
    assert_eq!(token_type("abs(`-3`)", "{}"), TokenType::Integer);
    assert_eq!(search("abs(`-3.5`)", "{}"), "3.5");
    assert!(matches!(
        search_err("abs(`-3000000000`)", "{}"),
        JmesPathError::Overflow { .. }
    ));
    assert_eq!(search("avg(`[1, 2, 3]`)", "{}"), "2.0");
    assert_eq!(token_type("avg(`[1, 2, 3]`)", "{}"), TokenType::Float);
    assert_eq!(search("avg(`[]`)", "{}"), "null");
    assert_eq!(search("ceil(`1.2`)", "{}"), "2");
    assert_eq!(token_type("ceil(`1.2`)", "{}"), TokenType::Integer);
    assert_eq!(search("floor(`-1.2`)", "{}"), "-2");
    assert_eq!(search("sum(`[]`)", "{}"), "0");
    assert_eq!(search("sum(`[1, 2.5]`)", "{}"), "3.5");
    assert_eq!(search("sum(`[1.5, 2.5]`)", "{}"), "4");
    assert_eq!(token_type("sum(`[1.5, 2.5]`)", "{}"), TokenType::Integer);
    assert_eq!(search("max(`[1, 3, 2]`)", "{}"), "3");
    assert_eq!(token_type("max(`[1, 3, 2]`)", "{}"), TokenType::Integer);
    assert_eq!(search("max(`[1, 3.0, 2]`)", "{}"), "3.0");
    assert_eq!(token_type("max(`[1, 3.0, 2]`)", "{}"), TokenType::Float);
    assert_eq!(search("min(`[\"b\", \"a\"]`)", "{}"), r#""a""#);
    assert_eq!(search("max(`[]`)", "{}"), "null");
    assert!(matches!(
        search_err("max(`[1, \"a\"]`)", "{}"),
        JmesPathError::InvalidType { .. }
    ));
    assert!(matches!(
        search_err("abs('x')", "{}"),
        JmesPathError::InvalidType { .. }
    ));
}

#[test]
fn builtin_string_and_collection_functions() {
    assert_eq!(search("contains('foobar', 'oba')", "{}"), "true");
    assert_eq!(search("contains(`[1, 2]`, `2`)", "{}"), "true");
    assert_eq!(search("contains(`[1, 2]`, `2.0`)", "{}"), "false");
    assert_eq!(search("contains('a1', `1`)", "{}"), "true");
    assert_eq!(search("starts_with('foobar', 'foo')", "{}"), "true");
    assert_eq!(search("ends_with('foobar', 'bar')", "{}"), "true");
    assert_eq!(search("join(', ', `[\"a\", \"b\"]`)", "{}"), r#""a, b""#);
    assert_eq!(search("keys(@)", r#"{"z":1,"a":2}"#), r#"["z","a"]"#);
    assert_eq!(search("values(@)", r#"{"z":1,"a":2}"#), "[1,2]");
    assert_eq!(search("length('héllo')", "{}"), "5");
    assert_eq!(search("length('\u{1F600}')", "{}"), "2");
    assert_eq!(search("length(@)", r#"{"a":1}"#), "1");
    assert_eq!(search("reverse('abc')", "{}"), r#""cba""#);
    assert_eq!(search("reverse(`[1, 2]`)", "{}"), "[2,1]");
    assert_eq!(search("sort(`[3, 1, 2.5]`)", "{}"), "[1,2.5,3]");
    assert_eq!(
        search("sort(`[\"b\", \"B\", \"a\"]`)", "{}"),
        r#"["B","a","b"]"#
    );
    assert_eq!(search("sort(`[]`)", "{}"), "[]");
    assert_eq!(search("to_array(`1`)", "{}"), "[1]");
    assert_eq!(search("to_array(`[1]`)", "{}"), "[1]");
    assert_eq!(search("to_array(@)", r#"{"a":1}"#), r#"[{"a":1}]"#);
    assert_eq!(search("not_null(a, b, `3`)", r#"{"b":2}"#), "2");
    assert_eq!(search("not_null(a)", "{}"), "null");
    assert_eq!(search("type(@)", "{}"), r#""object""#);
    assert_eq!(search("type(`1.5`)", "{}"), r#""number""#);
    assert_eq!(
        search(
            "[type(a), type(b), type(c), type(d)]",
            r#"{"a":null,"b":true,"c":"s","d":[]}"#
        ),
        r#"["null","boolean","string","array"]"#
    );
    assert_eq!(
        search(
            "max_by(p, &a).n",
            r#"{"p":[{"a":1,"n":"x"},{"a":3,"n":"y"},{"a":3,"n":"z"}]}"#
        ),
        r#""z""#
    );
    assert_eq!(
        search(
            "min_by(p, &n).a",
            r#"{"p":[{"a":1,"n":"b"},{"a":2,"n":"a"}]}"#
        ),
        "2"
    );
    assert_eq!(search("max_by(`[]`, &a)", "{}"), "null");
    assert!(matches!(
        search_err("sort_by(p, &a)", r#"{"p":[{"a":1},{"a":"x"}]}"#),
        JmesPathError::InvalidType { .. }
    ));
    assert!(matches!(
        search_err("length(`1`)", "{}"),
        JmesPathError::InvalidType { .. }
    ));
    assert!(matches!(
        search_err("map(a, `[]`)", "{}"),
        JmesPathError::InvalidType { .. }
    ));
}

#[test]
fn to_string_writes_newtonsoft_json() {
    assert_eq!(search("to_string(`1.0`)", "{}"), r#""1.0""#);
    assert_eq!(search("to_string(`0.00001`)", "{}"), r#""1E-05""#);
    assert_eq!(search("to_string(`1e20`)", "{}"), r#""1E+20""#);
    assert_eq!(
        search("to_string(`123456789012345.5`)", "{}"),
        r#""123456789012345.5""#
    );
    assert_eq!(
        search("to_string(`[1, 2.5, \"a\"]`)", "{}"),
        r#""[1,2.5,\"a\"]""#
    );
    assert_eq!(search("to_string('x')", "{}"), r#""x""#);
    assert_eq!(search("to_string(`true`)", "{}"), r#""true""#);
    assert_eq!(
        search("to_string(@)", r#"{"b":1,"a":[null]}"#),
        r#""{\"b\":1,\"a\":[null]}""#
    );
}

#[test]
fn to_number_follows_jmespath_net() {
    let cases = [
        ("'42'", "42", TokenType::Integer),
        ("' 42 '", "42", TokenType::Integer),
        ("'-42'", "-42", TokenType::Integer),
        ("'+7'", "7", TokenType::Integer),
        ("'1.5'", "1.5", TokenType::Float),
        ("'-1.5'", "-1.5", TokenType::Float),
        ("'.5'", "0.5", TokenType::Float),
        ("'5.'", "5.0", TokenType::Float),
        ("'1e3'", "1000.0", TokenType::Float),
        (
            "'9223372036854775808'",
            "9.223372036854776E+18",
            TokenType::Float,
        ),
        ("'abc'", "null", TokenType::Null),
        ("'1,000'", "null", TokenType::Null),
        ("'0x10'", "null", TokenType::Null),
        ("''", "null", TokenType::Null),
        ("`3.25`", "3.25", TokenType::Float),
        ("`3`", "3", TokenType::Integer),
        ("`true`", "null", TokenType::Null),
        ("`[1]`", "null", TokenType::Null),
    ];
    for (arg, json, tt) in cases {
        let expr = format!("to_number({arg})");
        assert_eq!(search(&expr, "{}"), json, "{expr}");
        assert_eq!(token_type(&expr, "{}"), tt, "{expr}");
    }
}

#[test]
fn integers_and_floats_keep_their_type() {
    let d = r#"{"i":1,"f":1.0,"s":"1","big":18446744073709551615}"#;
    assert_eq!(token_type("i", d), TokenType::Integer);
    assert_eq!(token_type("f", d), TokenType::Float);
    assert_eq!(token_type("big", d), TokenType::Integer);
    assert_eq!(search("f", d), "1.0");
    // JToken.DeepEquals: an Integer never equals a Float.
    assert_eq!(search("i == f", d), "false");
    assert_eq!(search("i == `1`", d), "true");
    assert_eq!(search("f == `1.0`", d), "true");
    assert_eq!(search("i < `1.5`", d), "true");
    assert_eq!(search("i == s", d), "false");
}

#[test]
fn null_orders_before_strings_like_jmespath_net() {
    assert_eq!(search("a < 'x'", "{}"), "true");
    assert_eq!(search("a <= 'x'", "{}"), "true");
    assert_eq!(search("a > 'x'", "{}"), "false");
    assert_eq!(search("'x' > a", "{}"), "true");
    assert_eq!(search("a >= b", "{}"), "true");
    assert_eq!(search("a < `1`", "{}"), "null");
    assert_eq!(search("'a' < 'b'", "{}"), "true");
    // ordinal UTF-16 order: U+FF5E sorts after U+1F600's surrogates
    assert_eq!(search("'\u{1F600}' < '\u{FF5E}'", "{}"), "true");
}

#[test]
fn merge_is_newtonsoft_jobject_merge() {
    assert_eq!(
        search(r#"merge(`{"a":1,"b":2}`, `{"b":3,"c":4}`)"#, "{}"),
        r#"{"a":1,"b":3,"c":4}"#
    );
    assert_eq!(
        search(r#"merge(`{"a":{"x":1}}`, `{"a":{"y":2}}`)"#, "{}"),
        r#"{"a":{"x":1,"y":2}}"#
    );
    assert_eq!(
        search(r#"merge(`{"a":[1]}`, `{"a":[2]}`)"#, "{}"),
        r#"{"a":[1,2]}"#
    );
    assert_eq!(
        search(r#"merge(`{"a":1}`, `{"a":null}`)"#, "{}"),
        r#"{"a":1}"#
    );
    assert_eq!(search(r#"merge(`{"a":null}`)"#, "{}"), r#"{"a":null}"#);
    assert!(matches!(
        search_err(r#"merge(`{}`, `1`)"#, "{}"),
        JmesPathError::InvalidType { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Custom functions (beyond the cases file)

#[test]
fn custom_function_messages_and_edges() {
    let e = search_err("add(a, `1`)", r#"{"a":"x"}"#);
    assert_eq!(
        e.to_string(),
        "Error: invalid-type, function add expects argument 0 to be one of the following: Integer|Float"
    );
    let e = search_err("insertString('a', `1`, `0`)", "{}");
    assert_eq!(
        e.to_string(),
        "Error: invalid-type, function insertString expects argument 1 to be one of the following: String"
    );
    let e = search_err("insertString('a', 'b', `0.5`)", "{}");
    assert!(
        e.to_string()
            .ends_with("expects argument 2 to be one of the following: Integer")
    );
    let e = search_err("fromUnixTimestamp(`1.5`)", "{}");
    assert!(
        e.to_string()
            .ends_with("expects argument 0 to be one of the following: Integer")
    );
    // integer arithmetic wraps like unchecked C#
    assert_eq!(
        search("add(`9223372036854775807`, `1`)", "{}"),
        "-9223372036854775808"
    );
    assert_eq!(search("divide(`7`, `2`)", "{}"), "3");
    assert_eq!(search("divide(`-7`, `2`)", "{}"), "-3");
    assert_eq!(search("divide(`7`, `0.0`)", "{}"), r#""Infinity""#);
    assert!(matches!(
        search_err("divide(`-9223372036854775808`, `-1`)", "{}"),
        JmesPathError::Overflow { .. }
    ));
    assert!(matches!(
        search_err("divide(`1`, `0`)", "{}"),
        JmesPathError::DivideByZero { .. }
    ));
    // Convert.ToInt64 rounds half to even
    assert_eq!(search("pow(`2`, `-1`)", "{}"), "0");
    assert_eq!(search("pow(`-2`, `63`)", "{}"), "-9223372036854775808");
    assert!(matches!(
        search_err("pow(`2`, `63`)", "{}"),
        JmesPathError::Overflow { .. }
    ));
    assert!(matches!(
        search_err("add(`18446744073709551615`, `1`)", "{}"),
        JmesPathError::Overflow { .. }
    ));
    assert_eq!(
        search("insertString('h\u{e9}llo', '!', `2`)", "{}"),
        "\"h\u{e9}!llo\""
    );
    assert!(matches!(
        search_err("insertString('\u{1F600}', '!', `1`)", "{}"),
        JmesPathError::ArgumentOutOfRange { .. }
    ));
    assert!(matches!(
        search_err("insertString('a', '!', `5000000000`)", "{}"),
        JmesPathError::Overflow { .. }
    ));
    assert!(matches!(
        search_err("fromUnixTimestamp(`253402300800`)", "{}"),
        JmesPathError::ArgumentOutOfRange { .. }
    ));
    let e = search_err("add(&a, `1`)", "{}");
    assert!(matches!(e, JmesPathError::InvalidType { .. }), "{e:?}");
}

#[test]
fn dates_behave_like_newtonsoft_date_tokens() {
    let d = r#"{"t":1625677200,"ms":1626799080123}"#;
    assert_eq!(token_type("fromUnixTimestamp(t)", d), TokenType::Date);
    assert_eq!(
        search("fromUnixTimestamp(t)", d),
        r#""2021-07-07T17:00:00Z""#
    );
    assert_eq!(
        search("fromUnixTimestampMs(ms)", d),
        r#""2021-07-20T16:38:00.123Z""#
    );
    assert_eq!(search("type(fromUnixTimestamp(t))", d), r#""string""#);
    assert_eq!(
        token_type("to_string(fromUnixTimestamp(t))", d),
        TokenType::Date
    );
    assert_eq!(search("length(fromUnixTimestamp(t))", d), "19");
    assert_eq!(
        search("starts_with(fromUnixTimestamp(t), '07/07/2021')", d),
        "true"
    );
    assert_eq!(
        search("fromUnixTimestamp(t) == '2021-07-07T17:00:00Z'", d),
        "false"
    );
    assert_eq!(
        search("fromUnixTimestamp(t) == fromUnixTimestamp(t)", d),
        "true"
    );
    assert_eq!(search("to_number(fromUnixTimestamp(t))", d), "null");
    let data = doc(d);
    let got = compile("fromUnixTimestamp(t)")
        .select_one(Scope::Token(&data))
        .unwrap();
    let expected = DateTime::from_timestamp(1_625_677_200, 0).unwrap();
    assert_eq!(got, Some(Scalar::Date(expected)));
}

// ---------------------------------------------------------------------------------------------
// select_one / select_matches

#[test]
fn compiled_expressions_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<JmesPath>();
    let e = compile("a.b");
    assert_eq!(e.text(), "a.b");
    assert!(function_names().any(|n| n == "fromUnixTimestampMs"));
    assert_eq!(function_names().count(), 34);
}

#[test]
fn evaluation_reports_projection_and_type() {
    let data = doc(r#"{"a":[{"b":1},{"b":2.5}],"s":"x"}"#);
    let eval = |e: &str| compile(e).evaluate(Scope::Token(&data)).unwrap();
    assert!(eval("a[*].b").is_projection());
    assert!(eval("a[?b].b").is_projection());
    assert!(eval("a[]").is_projection());
    assert!(eval("a[:1]").is_projection());
    assert!(eval("*").is_projection());
    assert!(!eval("a").is_projection());
    assert!(!eval("a[*].b | [0]").is_projection());
    assert!(!eval("[a]").is_projection());
    assert!(!eval("length(a[*])").is_projection());
    assert!(eval("(a[*].b)").is_projection());
    assert!(eval("missing || a[*].b").is_projection());
    assert!(!eval("a[*].b && s").is_projection());
    assert!(!eval("missing[*]").is_projection());
    assert_eq!(eval("a[1].b").token_type(), TokenType::Float);
    assert_eq!(eval("s").token_type(), TokenType::String);
    assert_eq!(eval("a[*].b").to_json().unwrap(), "[1,2.5]");
    assert_eq!(TokenType::Date.jmespath_name(), "string");
    assert_eq!(TokenType::Integer.to_string(), "Integer");
}

#[test]
fn select_one_semantics() {
    let data = doc(r#"{"a":{"b":"x"},"n":5,"f":2.5,"z":null,"l":[1,2],"o":[{"v":1}],"e":[]}"#);
    let one = |e: &str| compile(e).select_one(Scope::Token(&data));
    assert_eq!(one("a.b").unwrap(), Some(Scalar::Str(Cow::Borrowed("x"))));
    assert!(matches!(
        one("a.b").unwrap(),
        Some(Scalar::Str(Cow::Borrowed(_)))
    ));
    assert_eq!(one("n").unwrap(), Some(Scalar::Int(5)));
    assert_eq!(one("f").unwrap(), Some(Scalar::Float(2.5)));
    assert_eq!(one("z").unwrap(), None);
    assert_eq!(one("missing").unwrap(), None);
    assert_eq!(one("l").unwrap(), Some(Scalar::Structured));
    assert_eq!(one("l[0]").unwrap(), Some(Scalar::Int(1)));
    // a projection with one element is an array (the original returned a JArray)
    assert_eq!(one("o[*].v").unwrap(), Some(Scalar::Structured));
    assert_eq!(one("e[*]").unwrap(), Some(Scalar::Structured));
    assert_eq!(one("missing[*]").unwrap(), None);
    let err = one("l[*]").unwrap_err();
    assert_eq!(
        err,
        JmesPathError::MultipleTokens {
            expression: "l[*]".to_owned()
        }
    );
    assert!(
        err.to_string()
            .starts_with("multiple tokens were returned using expression $l[*]")
    );
    // a pipe ends the projection; a multi-select list is not a projection
    assert_eq!(one("l[*] | [0]").unwrap(), Some(Scalar::Int(1)));
    assert_eq!(one("[n, n]").unwrap(), Some(Scalar::Structured));
    assert!(one("l[*] || n").is_err());
    assert_eq!(one("e[*] || n").unwrap(), Some(Scalar::Int(5)));
    assert_eq!(
        one("to_string(n)").unwrap(),
        Some(Scalar::Str(Cow::Owned("5".to_owned())))
    );
    assert_eq!(one("`true`").unwrap(), Some(Scalar::Bool(true)));
    assert_eq!(
        one("'lit'").unwrap(),
        Some(Scalar::Str(Cow::Owned("lit".to_owned())))
    );
}

#[test]
fn select_matches_semantics() {
    let data = doc(r#"{"Body":[{"systolic":1},{"x":2},{"systolic":3}],"heartrate":7}"#);
    let matches = |e: &str| compile(e).select_matches(&data).unwrap();
    let m = matches("Body[?systolic]");
    assert_eq!(m.len(), 2);
    assert!(matches!(m[0], MatchToken::Borrowed(_)));
    assert_eq!(
        sonic_rs::to_string(m[1].value()).unwrap(),
        r#"{"systolic":3}"#
    );
    // to_array(@)[?x] tests the root itself
    let m = matches("to_array(@)[?heartrate]");
    assert_eq!(m.len(), 1);
    assert!(std::ptr::eq(m[0].value(), &data));
    assert!(matches("to_array(@)[?steps]").is_empty());
    assert!(matches("missing").is_empty());
    assert_eq!(matches("heartrate").len(), 1);
    assert_eq!(matches("Body").len(), 1);
    assert!(matches("Body[?nothing]").is_empty());
    // constructed values are owned, member order preserved
    let m = matches("Body[?systolic].{z: systolic, a: `1`}");
    assert_eq!(m.len(), 2);
    assert!(matches!(m[0], MatchToken::Owned(_)));
    assert_eq!(
        sonic_rs::to_string(m[0].value()).unwrap(),
        r#"{"z":1,"a":1}"#
    );
    let m = matches("Body[*].systolic");
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].value().as_i64(), Some(3));
}

// ---------------------------------------------------------------------------------------------
// The matchedToken overlay

/// Builds the object the original evaluated on: root members minus `matchedToken`, then
/// `matchedToken: matched`.
fn materialize(root: &str, matched: &str) -> Value {
    let root: Json = serde_json::from_str(root).unwrap();
    let matched: Json = serde_json::from_str(matched).unwrap();
    let mut obj = serde_json::Map::new();
    if let Json::Object(m) = root {
        for (k, v) in m {
            if k != "matchedToken" {
                obj.insert(k, v);
            }
        }
    }
    obj.insert("matchedToken".to_owned(), matched);
    doc(&serde_json::to_string(&Json::Object(obj)).unwrap())
}

#[test]
fn overlay_equals_materialized_object() {
    let roots = [
        r#"{"a":1,"matchedToken":"old","b":{"c":[1,2]},"z":null}"#,
        r#"{"Body":[{"systolic":120,"diastolic":80}],"Properties":{"deviceId":"d1"}}"#,
        r#"{}"#,
        r#"{"matchedToken":{"x":1}}"#,
    ];
    let matched = [
        r#"{"systolic":120,"x":[1,2,3]}"#,
        "5",
        "null",
        r#"[{"a":1},{"a":2}]"#,
    ];
    let exprs = [
        "@",
        "matchedToken",
        "matchedToken.systolic",
        "a",
        "b.c[1]",
        "keys(@)",
        "values(@)",
        "length(@)",
        "*",
        "to_string(@)",
        "to_array(@)[?a]",
        "[matchedToken, a]",
        "{m: matchedToken, a: a}",
        "merge(@, `{\"a\": 9}`)",
        "merge(`{\"q\": 1}`, @)",
        "@ == @",
        "type(@)",
        "not_null(missing, matchedToken)",
        "*[?a]",
        "matchedToken[*].a",
        "Properties.deviceId",
        "Body[?systolic].diastolic",
        "contains(keys(@), 'matchedToken')",
        "sort(keys(@))",
        "map(&type(@), values(@))",
        "@.matchedToken",
    ];
    for root in roots {
        for m in matched {
            let materialized = materialize(root, m);
            let root_v = doc(root);
            let matched_v = doc(m);
            for e in exprs {
                let expr = compile(e);
                let overlay = expr
                    .evaluate(Scope::WithMatch {
                        root: &root_v,
                        matched: &matched_v,
                    })
                    .and_then(|r| r.to_json());
                let plain = expr
                    .evaluate(Scope::Token(&materialized))
                    .and_then(|r| r.to_json());
                assert_eq!(overlay, plain, "{e} on {root} + {m}");
                let one_overlay = expr.select_one(Scope::WithMatch {
                    root: &root_v,
                    matched: &matched_v,
                });
                let one_plain = expr.select_one(Scope::Token(&materialized));
                assert_eq!(
                    format!("{one_overlay:?}"),
                    format!("{one_plain:?}"),
                    "select_one {e} on {root} + {m}"
                );
            }
        }
    }
    // comparing the overlay with an equal plain object
    let root_v = doc(r#"{"a":1}"#);
    let matched_v = doc("2");
    let data = doc(r#"{"o":{"matchedToken":2,"a":1}}"#);
    let _ = data;
    let r = compile("@ == `{\"a\":1,\"matchedToken\":2}`")
        .evaluate(Scope::WithMatch {
            root: &root_v,
            matched: &matched_v,
        })
        .unwrap()
        .to_json()
        .unwrap();
    assert_eq!(r, "true");
}

// ---------------------------------------------------------------------------------------------
// The original's custom-function cases

fn conformance_dir() -> PathBuf {
    match std::env::var_os("IOMT_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    }
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn to_sonic(json: &Json) -> Value {
    doc(&serde_json::to_string(json).unwrap())
}

#[test]
fn jmespath_custom_function_cases_from_the_original() {
    let path = conformance_dir()
        .join("iomt-fhir/transcribed/algorithms/jmespath-custom-functions.cases.json");
    let file = read_json(&path);
    let parse_errors = file["parseErrors"].as_array().expect("parseErrors");
    for expr in parse_errors {
        let expr = expr.as_str().unwrap();
        let msg = parse_error(expr);
        assert!(
            msg.starts_with(&format!(
                "the following JmesPath expression could not be parsed: {expr}. cause: "
            )),
            "{msg}"
        );
    }
    let cases = file["cases"].as_array().expect("cases");
    let mut passed = 0;
    let mut failures = Vec::new();
    for case in cases {
        let expr = case["expression"].as_str().unwrap();
        let data = to_sonic(&case["data"]);
        let note = case["note"].as_str().unwrap_or("");
        let result = compile(expr).evaluate(Scope::Token(&data));
        let outcome: Result<(), String> = match (case.get("expected_error"), result) {
            (Some(class), Err(err)) => {
                let class = class.as_str().unwrap();
                let ok = match class {
                    c if c.starts_with("Exception (invalid-type") => {
                        matches!(err, JmesPathError::InvalidType { .. })
                            && err
                                .to_string()
                                .starts_with("Error: invalid-type, function ")
                    }
                    "DivideByZeroException" => matches!(err, JmesPathError::DivideByZero { .. }),
                    "OverflowException" => matches!(err, JmesPathError::Overflow { .. }),
                    "ArgumentOutOfRangeException" => {
                        matches!(err, JmesPathError::ArgumentOutOfRange { .. })
                    }
                    other => panic!("unknown error class {other}"),
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!("expected {class}, got {err:?}"))
                }
            }
            (Some(class), Ok(r)) => Err(format!("expected {class}, got {:?}", r.to_json())),
            (None, Err(err)) => Err(format!("unexpected error {err}")),
            (None, Ok(r)) => {
                let tt = r.token_type();
                let expected_tt = case["expectedTokenType"].as_str().unwrap();
                let expected = &case["expected"];
                let value_ok = match r.clone().into_scalar() {
                    Some(Scalar::Int(i)) => expected.as_i64() == Some(i),
                    Some(Scalar::Float(f)) => {
                        let e = expected.as_f64().unwrap();
                        if note.contains("dp") || note.contains("decimal places") {
                            (f - e).abs() < 0.00005
                        } else {
                            f == e
                        }
                    }
                    Some(Scalar::Str(s)) => expected.as_str() == Some(&*s),
                    Some(Scalar::Date(d)) => {
                        // C# ToString("yyyy-MM-ddTHH:mm:ssz") of a UTC DateTime
                        let rendered = format!("{}+0", d.format("%Y-%m-%dT%H:%M:%S"));
                        expected.as_str() == Some(rendered.as_str())
                    }
                    other => panic!("{expr}: unexpected result {other:?}"),
                };
                if tt.as_str() != expected_tt {
                    Err(format!("token type {tt}, expected {expected_tt}"))
                } else if !value_ok {
                    Err(format!("value {:?}, expected {expected}", r.to_json()))
                } else {
                    Ok(())
                }
            }
        };
        match outcome {
            Ok(()) => passed += 1,
            Err(why) => failures.push(format!("{expr} on {}: {why}", case["data"])),
        }
    }
    println!(
        "custom-function cases: {passed}/{} passed, parse errors: {}/{} rejected",
        cases.len(),
        parse_errors.len(),
        parse_errors.len()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert_eq!(cases.len(), 46, "the cases file changed; review the test");
}

/// Every JMESPath expression in the conformance templates compiles.
#[test]
fn jmespath_expressions_in_conformance_templates_compile() {
    fn walk(v: &Json, out: &mut Vec<String>) {
        match v {
            Json::Object(m) => {
                let default_jmes =
                    m.get("defaultExpressionLanguage").and_then(Json::as_str) == Some("JmesPath");
                for (k, val) in m {
                    if k.ends_with("Expression") {
                        match val {
                            Json::String(s) if default_jmes => out.push(s.clone()),
                            Json::Object(e)
                                if e.get("language").and_then(Json::as_str) == Some("JmesPath") =>
                            {
                                if let Some(s) = e.get("value").and_then(Json::as_str) {
                                    out.push(s.to_owned());
                                }
                            }
                            _ => {}
                        }
                    }
                    if k == "values" {
                        if let Json::Array(items) = val {
                            for item in items {
                                if let Json::Object(vm) = item {
                                    match vm.get("valueExpression") {
                                        Some(Json::String(s)) if default_jmes => {
                                            out.push(s.clone())
                                        }
                                        Some(other) => walk(
                                            &Json::Object(
                                                [("valueExpression".to_owned(), other.clone())]
                                                    .into_iter()
                                                    .collect(),
                                            ),
                                            out,
                                        ),
                                        None => {}
                                    }
                                }
                            }
                        }
                    } else {
                        walk(val, out);
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|e| e == "json") {
                out.push(p);
            }
        }
    }
    let root = conformance_dir().join("iomt-fhir");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    assert!(
        !paths.is_empty(),
        "no conformance files under {}",
        root.display()
    );
    let mut exprs = Vec::new();
    for p in paths {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        if !text.contains("JmesPath") {
            continue;
        }
        if let Ok(json) = serde_json::from_str::<Json>(text.trim_start_matches('\u{feff}')) {
            walk(&json, &mut exprs);
        }
    }
    exprs.sort();
    exprs.dedup();
    assert!(exprs.len() >= 8, "found only {exprs:?}");
    for e in &exprs {
        JmesPath::compile(e).unwrap_or_else(|err| panic!("{e}: {err}"));
    }
    assert!(exprs.iter().any(|e| e == "to_array(@)[?heartrate]"));
}

/// The corpus' JmesPath-only `CalculatedContent` normalization cases: type matches, device ids
/// and property values (strings and integers; no .NET conversions involved) agree with the
/// expected measurements.
#[test]
fn jmespath_normalization_cases_from_the_corpus() {
    fn templates<'j>(v: &'j Json, out: &mut Vec<&'j Json>) {
        match v.get("templateType").and_then(Json::as_str) {
            Some("CollectionContent") => {
                for t in v["template"].as_array().into_iter().flatten() {
                    templates(t, out);
                }
            }
            Some("CalculatedContent") => out.push(&v["template"]),
            _ => {}
        }
    }
    let dir = conformance_dir().join("iomt-fhir/transcribed/normalization");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)
        .expect("normalization cases")
        .flatten()
    {
        let case = entry.path();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("jmespath") || !case.join("expected.json").exists() {
            continue;
        }
        let mut template_path = case.join("template.json");
        if !template_path.exists() {
            // The corpus resolves `$ref` lexically against the ref file's own path.
            let reference = read_json(&case.join("template.ref.json"));
            let mut base = case.join("template.ref.json");
            let mut rest = reference["$ref"].as_str().unwrap();
            while let Some(r) = rest.strip_prefix("../") {
                base.pop();
                rest = r;
            }
            template_path = base.join(rest);
        }
        let template = read_json(&template_path);
        let input = to_sonic(&read_json(&case.join("input.json")));
        let expected = read_json(&case.join("expected.json"));
        let mut found = Vec::new();
        let mut list = Vec::new();
        templates(&template, &mut list);
        for t in list {
            assert_eq!(t["defaultExpressionLanguage"], "JmesPath", "{name}");
            let matches = compile(t["typeMatchExpression"].as_str().unwrap())
                .select_matches(&input)
                .unwrap();
            for m in &matches {
                let scope = Scope::WithMatch {
                    root: &input,
                    matched: m.value(),
                };
                let text = |expr: &str| -> Option<String> {
                    match compile(expr).select_one(scope).unwrap() {
                        Some(Scalar::Str(s)) => Some(s.into_owned()),
                        Some(Scalar::Int(i)) => Some(i.to_string()),
                        None => None,
                        other => panic!("{name}: {expr} gave {other:?}"),
                    }
                };
                let device = text(t["deviceIdExpression"].as_str().unwrap());
                let props: Vec<Json> = t["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|v| {
                        text(v["valueExpression"].as_str().unwrap()).map(
                            |value| serde_json::json!({"Name": v["valueName"], "Value": value}),
                        )
                    })
                    .collect();
                found.push(serde_json::json!([device, t["typeName"], props]));
            }
        }
        let want: Vec<Json> = expected
            .as_array()
            .unwrap()
            .iter()
            .map(|m| serde_json::json!([m["DeviceId"], m["Type"], m["Properties"]]))
            .collect();
        assert_eq!(found, want, "{name}");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} cases checked");
}

// ---------------------------------------------------------------------------------------------
// The official JMESPath compliance suite

/// Cases of the official suite that this engine deliberately answers differently, with why.
fn compliance_skips() -> BTreeMap<(&'static str, &'static str), &'static str> {
    BTreeMap::from(COMPLIANCE_SKIPS.map(|(file, expr, why)| ((file, expr), why)))
}

/// (file, expression, reason)
const COMPLIANCE_SKIPS: [(&str, &str, &str); 0] = [];

fn numbers_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| numbers_equal(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| numbers_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The suite is public test data we do not vendor: point `JMESPATH_COMPLIANCE_DIR` at the
/// `tests/` folder of a checkout of jmespath/jmespath.test and run with `--ignored`.
#[test]
#[ignore = "needs JMESPATH_COMPLIANCE_DIR (the jmespath.test suite, not vendored)"]
fn jmespath_compliance_suite() {
    let dir = match std::env::var_os("JMESPATH_COMPLIANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!("set JMESPATH_COMPLIANCE_DIR to the jmespath.test tests folder"),
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no compliance files in {}",
        dir.display()
    );
    let skips = compliance_skips();
    let (mut passed, mut skipped, mut failed) = (0, 0, Vec::new());
    let mut skip_hits = 0;
    for path in names {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let suites = read_json(&path);
        for suite in suites.as_array().unwrap() {
            let given = to_sonic(&suite["given"]);
            for case in suite["cases"].as_array().unwrap() {
                if case.get("bench").is_some() {
                    continue;
                }
                let expr = case["expression"].as_str().unwrap();
                let outcome: Result<(), String> = match JmesPath::compile(expr) {
                    Err(e) => match case.get("error") {
                        Some(_) => Ok(()),
                        None => Err(format!("compile error {e}")),
                    },
                    Ok(compiled) => match (compiled.search_json(&given), case.get("error")) {
                        (Err(_), Some(_)) => Ok(()),
                        (Ok(v), Some(kind)) => Err(format!("expected error {kind}, got {v}")),
                        (Err(e), None) => Err(format!("runtime error {e}")),
                        (Ok(v), None) => {
                            let got: Json = serde_json::from_str(&v).unwrap();
                            if numbers_equal(&got, &case["result"]) {
                                Ok(())
                            } else {
                                Err(format!("got {v}, expected {}", case["result"]))
                            }
                        }
                    },
                };
                let skip = skips.get(&(file.as_str(), expr));
                match (outcome, skip) {
                    (Ok(()), None) => passed += 1,
                    (Ok(()), Some(_)) => failed.push(format!(
                        "{file}: {expr}: listed as skipped but passes; remove it from the list"
                    )),
                    (Err(_), Some(_)) => {
                        skipped += 1;
                        skip_hits += 1;
                    }
                    (Err(why), None) => failed.push(format!("{file}: {expr}: {why}")),
                }
            }
        }
    }
    println!(
        "jmespath compliance: {passed} passed, {skipped} skipped (deliberate deviations), {} failed",
        failed.len()
    );
    assert_eq!(skip_hits, skips.len(), "some skip entries match no case");
    assert!(failed.is_empty(), "failures:\n{}", failed.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Performance smoke test (run with `--release --ignored --nocapture`)

#[test]
#[ignore = "timing; run in release"]
fn jmespath_timing() {
    let data = doc(
        r#"{"Body":{"heartrate":78,"device":"d1","date":"2021-01-01T00:00:00Z","steps":10},
            "Properties":{"deviceId":"dev-123"},"SystemProperties":{"enqueued":"x"}}"#,
    );
    let matched = data.get("Body").unwrap();
    let only = std::env::var("JMESPATH_TIMING_ONLY").ok();
    let n: u32 = std::env::var("JMESPATH_TIMING_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let start = std::time::Instant::now();
    let mut count = 0usize;
    for _ in 0..if only.as_deref().is_none_or(|o| o == "baseline") {
        n
    } else {
        0
    } {
        let d = std::hint::black_box(&data);
        let r = d
            .get("Properties")
            .and_then(|p| p.get("deviceId"))
            .map(Scalar::from_value);
        count += usize::from(r.is_some());
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("baseline sonic get.get: {ns:.1} ns/op ({count})");
    for (name, expr) in [
        ("a.b", "Properties.deviceId"),
        ("matchedToken.x", "matchedToken.heartrate"),
        ("to_array(@)[?Body]", "to_array(@)[?Body]"),
        (
            "multiply",
            "multiply(to_number(matchedToken.heartrate), `0.0254`)",
        ),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let e = compile(expr);
        let start = std::time::Instant::now();
        let mut count = 0usize;
        for _ in 0..n {
            let r = e
                .select_one(std::hint::black_box(Scope::WithMatch {
                    root: &data,
                    matched,
                }))
                .unwrap();
            count += usize::from(r.is_some());
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{name}: {ns:.1} ns/op ({count})");
    }
}

/// Nested projections can multiply work combinatorially; the step budget turns that into an
/// error instead of a stalled pipeline (found by fuzzing: fuzz/regressions/).
#[test]
fn combinatorial_expressions_hit_the_step_budget() {
    let doc: Value = sonic_rs::from_str(
        r#"{"a":[[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8]]}"#,
    )
    .unwrap();
    // Each stage doubles the list: 2^24 elements after 24 stages, in a 300-character expression.
    let text = format!("a{}", " | [@, @][]".repeat(24));
    let expr = JmesPath::compile(&text).unwrap();
    let err = expr.select_one(Scope::Token(&doc)).unwrap_err();
    assert!(matches!(err, JmesPathError::TooMuchWork { .. }), "{err}");
    // A normal expression right after is unaffected: the budget is per evaluation.
    let ok = JmesPath::compile("a[0][1]").unwrap();
    assert_eq!(
        ok.select_one(Scope::Token(&doc)).unwrap(),
        Some(Scalar::Int(2))
    );
}
