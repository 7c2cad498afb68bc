//! Behaviour tests. Many cases are Newtonsoft's own `JPathExecuteTests`/`JPathParseTests`
//! re-expressed (named after them), plus the dialect surprises the connector's templates rely on.

use sonic_rs::Value;

use super::eval::{self, Flow, Tok};
use super::*;
use crate::Scope;

// ---------------------------------------------------------------------------------------------
// helpers

fn doc(json: &str) -> Value {
    sonic_rs::from_str(json).unwrap_or_else(|e| panic!("test document {json}: {e}"))
}

fn compile(path: &str) -> JsonPath {
    JsonPath::compile(path).unwrap_or_else(|e| panic!("{path:?} should compile: {e}"))
}

fn text(v: &Value) -> String {
    sonic_rs::to_string(v).expect("serializable")
}

/// `SelectTokens` on a plain token, results serialized.
fn all(path: &str, json: &str) -> Vec<String> {
    let d = doc(json);
    compile(path)
        .try_select_all(&d)
        .unwrap_or_else(|e| panic!("{path:?} on {json}: {e}"))
        .into_iter()
        .map(text)
        .collect()
}

/// `SelectTokens` including member tokens, shown as `name:value`.
fn tokens(path: &str, json: &str) -> Vec<String> {
    let d = doc(json);
    let p = compile(path);
    let (ctx, start) = context(Scope::Token(&d));
    let mut out = Vec::new();
    eval::run(&ctx, &p.steps, start, &mut |t| {
        out.push(match t {
            Tok::Prop(k, v) => format!("{k}:{}", text(v)),
            Tok::Root => "$".to_owned(),
            other => text(other.value().expect("a value")),
        });
        Ok(Flow::Continue)
    })
    .unwrap_or_else(|e| panic!("{path:?}: {e:?}"));
    out
}

fn count(path: &str, json: &str) -> usize {
    all(path, json).len()
}

/// `SelectToken` on a plain token.
fn one(path: &str, json: &str) -> Result<Option<String>, JsonPathError> {
    let d = doc(json);
    compile(path).select_one(Scope::Token(&d)).map(|n| {
        n.map(|n| match n {
            Node::Value(v) => text(v),
            Node::ScopeRoot => "<scope root>".to_owned(),
        })
    })
}

fn eval_error(path: &str, json: &str) -> JsonPathError {
    let d = doc(json);
    match compile(path).try_select_all(&d) {
        Ok(v) => panic!("{path:?} should fail, got {} results", v.len()),
        Err(e) => e,
    }
}

fn syntax(path: &str) -> (usize, String) {
    match JsonPath::compile(path) {
        Ok(p) => panic!("{path:?} should not compile: {:?}", p.steps),
        Err(JsonPathError::Syntax {
            position,
            message,
            expression,
        }) => {
            assert_eq!(expression, path);
            (position, message)
        }
        Err(e) => panic!("{path:?}: unexpected error {e}"),
    }
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The object a `WithMatch` scope stands for, built by parsing text.
fn materialize(root: &Value, matched: &Value) -> Value {
    use sonic_rs::JsonContainerTrait;
    let mut out = String::from("{");
    if let Some(obj) = root.as_object() {
        for (k, v) in obj.iter() {
            if k == "matchedToken" {
                continue;
            }
            out.push_str(&sonic_rs::to_string(k).expect("key"));
            out.push(':');
            out.push_str(&text(v));
            out.push(',');
        }
    }
    out.push_str("\"matchedToken\":");
    out.push_str(&text(matched));
    out.push('}');
    doc(&out)
}

type Shown = Result<Vec<String>, JsonPathError>;

fn overlay_and_materialized(path: &JsonPath, root: &Value, matched: &Value) -> (Shown, Shown) {
    let m = materialize(root, matched);
    let m_text = text(&m);
    let show = |nodes: Vec<Node<'_>>| -> Vec<String> {
        nodes
            .into_iter()
            .map(|n| match n {
                Node::Value(v) => text(v),
                Node::ScopeRoot => m_text.clone(),
            })
            .collect()
    };
    let overlay = path
        .select_nodes(Scope::WithMatch { root, matched })
        .map(show);
    let plain = path.select_nodes(Scope::Token(&m)).map(show);
    (overlay, plain)
}

const IOT_HUB: &str = r#"{
  "Body": { "heartrate": "203" },
  "Properties": {
    "iothub-creation-time-utc": "2019-01-30T22:45:02.6073744Z",
    "tz": "America/Los_Angeles"
  },
  "SystemProperties": {
    "iothub-connection-device-id": "ev-d795-1d04-55ae",
    "iothub-enqueuedtime": "2019-02-01T22:46:01.875Z"
  }
}"#;

const STORE: &str = r#"{
  "store": {
    "book": [
      { "category": "reference", "author": "Nigel Rees", "title": "Sayings of the Century", "price": 8.95 },
      { "category": "fiction", "author": "Evelyn Waugh", "title": "Sword of Honour", "price": 12.99 },
      { "category": "fiction", "author": "Herman Melville", "title": "Moby Dick", "isbn": "0-553-21311-3", "price": 8.99 },
      { "category": "fiction", "author": "J. R. R. Tolkien", "title": "The Lord of the Rings", "isbn": "0-395-19395-8", "price": 22.99 }
    ],
    "bicycle": [ { "color": "red", "price": 19.95 } ]
  },
  "expensive": 10
}"#;

const ELEMENTS: &str = r#"{
  "elements": [
    { "id": "A", "children": [
        { "id": "AA", "children": [ { "id": "AAA" }, { "id": "AAB" } ] },
        { "id": "AB" } ] },
    { "id": "B", "children": [] }
  ]
}"#;

// ---------------------------------------------------------------------------------------------
// roots, members, quoting

#[test]
fn empty_whitespace_and_dollar_select_the_token_itself() {
    let json = r#"{"Blah":1}"#;
    assert_eq!(all("", json), s(&[json]));
    assert_eq!(all(" ", json), s(&[json]));
    assert_eq!(all("$", json), s(&[json]));
    assert_eq!(all(" $.Blah ", json), s(&["1"]));
}

#[test]
fn leading_dollar_is_optional() {
    let json = r#"{"heartrate":70,"property":[{"name":"a"},{"name":"b"}]}"#;
    assert_eq!(all("heartrate", json), s(&["70"]));
    assert_eq!(all("$.heartrate", json), s(&["70"]));
    assert_eq!(all("property[*].name", json), s(&["\"a\"", "\"b\""]));
    assert_eq!(all("$.property[*].name", json), s(&["\"a\"", "\"b\""]));
}

#[test]
fn dollar_not_followed_by_dot_or_bracket_is_part_of_a_name() {
    // EvaluateDollarTypeString
    assert_eq!(all("$values[1]", r#"{"$values":[1,2,3]}"#), s(&["2"]));
    // "$ " is the member "$" (the space ends the path)
    assert_eq!(all("$ ", r#"{"$":5}"#), s(&["5"]));
}

#[test]
fn names_with_hyphens_and_other_characters() {
    assert_eq!(
        all("$.SystemProperties.iothub-connection-device-id", IOT_HUB),
        s(&["\"ev-d795-1d04-55ae\""])
    );
    assert_eq!(
        all("$.Properties.iothub-creation-time-utc", IOT_HUB),
        s(&["\"2019-01-30T22:45:02.6073744Z\""])
    );
    let json = r#"{"a=b":1,"@x":2,"é-ü":3,"q'":4,"a*":5,"$":6}"#;
    assert_eq!(all("$.a=b", json), s(&["1"]));
    assert_eq!(all("$.@x", json), s(&["2"]));
    assert_eq!(all("$.é-ü", json), s(&["3"]));
    assert_eq!(all("$.q'", json), s(&["4"]));
    assert_eq!(all("$.a*", json), s(&["5"]));
    assert_eq!(all("$.$", json), s(&["6"]));
    // names are case-sensitive
    assert!(all("$.A=B", json).is_empty());
}

#[test]
fn trailing_non_space_whitespace_is_trimmed_from_the_last_name() {
    assert_eq!(all("$.a\t", r#"{"a":1}"#), s(&["1"]));
    assert_eq!(all("$.a\tb", r#"{"a\tb":1}"#), s(&["1"]));
}

#[test]
fn quoted_names() {
    let json = r#"{"My Property":1,"Blah.Ha":2,"[*]":3,"":4," ":5,"*":6,"h'i":7,"a\\b":8}"#;
    assert_eq!(all("['My Property']", json), s(&["1"]));
    assert_eq!(all("$['My Property']", json), s(&["1"]));
    assert_eq!(all("$.['My Property']", json), s(&["1"]));
    assert_eq!(all("$..['My Property']", json), s(&["1"]));
    assert_eq!(all("['Blah.Ha']", json), s(&["2"]));
    assert_eq!(all("['[*]']", json), s(&["3"]));
    assert_eq!(all("['']", json), s(&["4"]));
    assert_eq!(all("[' ']", json), s(&["5"]));
    assert_eq!(
        all("$.['*']", json),
        s(&["6"]),
        "a quoted * is a literal name"
    );
    assert_eq!(all(r"['h\'i']", json), s(&["7"]));
    assert_eq!(all(r"['a\\b']", json), s(&["8"]));
    assert_eq!(all("[  'My Property'  ]", json), s(&["1"]));
    // EvaluateEmptyString
    assert!(all("['']", r#"{"Blah":1}"#).is_empty());
}

#[test]
fn quoted_escapes() {
    let json = "{\"\\b\\t\\n\\f\\r\\\\\\\"'/\":1}";
    assert_eq!(all(r#"['\b\t\n\f\r\\\"\'\/']"#, json), s(&["1"]));
    let (_, message) = syntax(r"['h\i']");
    assert!(message.contains("unknown escape '\\i'"), "{message}");
}

#[test]
fn double_quotes_are_not_quotes() {
    let (position, message) = syntax(r#"$["x"]"#);
    assert_eq!(position, 3);
    assert!(message.contains("single quotes"), "{message}");
    // outside brackets a double quote is an ordinary name character
    assert_eq!(all(r#"$."x""#, r#"{"\"x\"":1}"#), s(&["1"]));
}

#[test]
fn property_following_escaped_property_name() {
    let json = r#"{"frameworks":{"dnxcore50":{"dependencies":{"System.Xml.ReaderWriter":{"source":"x"}}}}}"#;
    assert_eq!(
        all(
            "frameworks.dnxcore50.dependencies.['System.Xml.ReaderWriter'].source",
            json
        ),
        s(&["\"x\""])
    );
}

#[test]
fn member_access_on_non_objects_yields_nothing() {
    assert!(all("BlahBlah", "[1,2,3]").is_empty());
    assert!(all("$.a.b", r#"{"a":5}"#).is_empty());
    assert!(all("$.a.b", r#"{"a":"text"}"#).is_empty());
    assert!(all("Missing[1]", r#"{"Blah":1}"#).is_empty());
    assert!(
        all("$.a.*", r#"{"a":[1,2]}"#).is_empty(),
        ".* is for objects only"
    );
}

#[test]
fn wildcard_members() {
    assert_eq!(all("$.*", r#"{"Blah":1,"Blah2":2}"#), s(&["1", "2"]));
    assert_eq!(all("*", r#"{"Blah":1,"Blah2":[2]}"#), s(&["1", "[2]"]));
    assert_eq!(
        all("$.*.a", r#"{"x":{"a":1},"y":[{"a":2}],"z":{"a":3}}"#),
        s(&["1", "3"])
    );
}

#[test]
fn member_unions_keep_written_order_and_duplicates() {
    let json = r#"{"a":1,"b":2,"c":3}"#;
    assert_eq!(all("['c','a']", json), s(&["3", "1"]));
    assert_eq!(all("['a','a']", json), s(&["1", "1"]));
    assert_eq!(all("['a','missing','b']", json), s(&["1", "2"]));
    assert_eq!(all("[ 'a' , 'b' ]", json), s(&["1", "2"]));
}

#[test]
fn parentheses_work_as_indexer_brackets() {
    assert_eq!(all("$.a(1)", r#"{"a":[1,2]}"#), s(&["2"]));
    assert_eq!(all("('a')", r#"{"a":[1,2]}"#), s(&["[1,2]"]));
    // '$' followed by '(' is not the root but the start of the member name "$"
    assert_eq!(all("$('a')", r#"{"$":{"a":3},"a":[1,2]}"#), s(&["3"]));
}

// ---------------------------------------------------------------------------------------------
// arrays

#[test]
fn array_indexes() {
    let a = "[1,2,3,4]";
    assert_eq!(all("[1]", a), s(&["2"]));
    assert_eq!(all("$[1]", a), s(&["2"]));
    assert_eq!(all("$.[1]", a), s(&["2"]));
    assert_eq!(all("[  1  ]", a), s(&["2"]));
    assert!(all("[1000].Ha", a).is_empty());
    assert!(all("[2147483647]", a).is_empty());
    assert!(all("[1]", r#"{"Blah":1}"#).is_empty(), "index on object");
    assert_eq!(
        all("People[0].N", r#"{"People":[{"N":"Jeff"}]}"#),
        s(&["\"Jeff\""])
    );
    assert_eq!(all("[1][0][0]", "[0,[[7]]]"), s(&["7"]));
}

#[test]
fn negative_index_fails_on_arrays_only() {
    let e = eval_error("$.a[-1]", r#"{"a":[1,2]}"#);
    assert_eq!(
        e,
        JsonPathError::NegativeIndex {
            expression: "$.a[-1]".into(),
            index: -1
        }
    );
    assert!(e.to_string().contains("[-1:]"), "{e}");
    assert!(
        eval_error("$.a[-1]", r#"{"a":[]}"#)
            .to_string()
            .contains("-1")
    );
    assert!(all("$.a[-1]", r#"{"a":{"x":1}}"#).is_empty());
    assert!(all("$.a[-1]", r#"{"a":3}"#).is_empty());
    assert!(matches!(
        eval_error("$.a[0,-2]", r#"{"a":[1,2]}"#),
        JsonPathError::NegativeIndex { index: -2, .. }
    ));
    // select_all is lossy
    let d = doc(r#"{"a":[1,2]}"#);
    assert!(compile("$.a[-1]").select_all(&d).is_empty());
    assert!(matches!(
        compile("$.a[-1]").select_one(Scope::Token(&d)),
        Err(JsonPathError::NegativeIndex { index: -1, .. })
    ));
}

#[test]
fn array_wildcard_is_for_arrays_only() {
    assert_eq!(all("[*]", "[1,2,3,4]"), s(&["1", "2", "3", "4"]));
    assert_eq!(
        all("[ * ].derp", r#"[{"derp":1},{"x":2},{"derp":3}]"#),
        s(&["1", "3"])
    );
    assert_eq!(all("$.[*]", "[1,2]"), s(&["1", "2"]));
    assert!(all("[*]", r#"{"a":1}"#).is_empty());
    // Newtonsoft quirk: '*' anywhere makes the indexer a wildcard
    assert_eq!(all("[1,*]", "[1,2]"), s(&["1", "2"]));
}

#[test]
fn index_unions_keep_written_order_and_duplicates() {
    let a = "[1,2,3,4]";
    assert_eq!(all("[1,2,0]", a), s(&["2", "3", "1"]));
    assert_eq!(all("[   1  ,   3   ]", a), s(&["2", "4"]));
    assert_eq!(all("[0,0]", a), s(&["1", "1"]));
    assert_eq!(all("[9,10,1]", a), s(&["2"]));
}

#[test]
fn array_slices() {
    // EvaluateArraySlice
    let a = "[1,2,3,4,5,6,7,8,9]";
    assert_eq!(all("[-3:]", a), s(&["7", "8", "9"]));
    assert_eq!(all("[-1:-2:-1]", a), s(&["9"]));
    assert_eq!(all("[-2:-1]", a), s(&["8"]));
    assert!(all("[1:1]", a).is_empty());
    assert_eq!(all("[1:2]", a), s(&["2"]));
    assert_eq!(
        all("[::-1]", a),
        s(&["9", "8", "7", "6", "5", "4", "3", "2", "1"])
    );
    assert_eq!(all("[::-2]", a), s(&["9", "7", "5", "3", "1"]));
    assert_eq!(all("[:]", a).len(), 9);
    assert_eq!(all("[ : 2 : ]", a), s(&["1", "2"]));
    assert_eq!(all("[  -3  :  ]", a), s(&["7", "8", "9"]));
    assert_eq!(all("[1:6:2]", a), s(&["2", "4", "6"]));
    assert!(all("[99:]", a).is_empty());
    assert!(all("[1:-19]", a).is_empty());
    assert_eq!(all("[-100:2]", a), s(&["1", "2"]));
    assert_eq!(all("[5:100]", a), s(&["6", "7", "8", "9"]));
    assert_eq!(all("[100::-3]", a), s(&["9", "6", "3"]));
    assert!(all("[:]", "[]").is_empty());
    assert!(all("[::-1]", "[]").is_empty());
    assert!(all("[:]", r#"{"a":1}"#).is_empty());
    assert_eq!(all("[0::2147483647]", a), s(&["1"]));
    assert_eq!(all("[-2147483648:2147483647:2147483647]", a), s(&["1"]));
}

#[test]
fn zero_slice_step_is_a_compile_error() {
    let (_, message) = syntax("[::0]");
    assert!(message.contains("zero"), "{message}");
    syntax("$.a[1:2:0]");
}

#[test]
fn scan_before_an_array_indexer_is_ignored() {
    // Newtonsoft passes `scan` only to quoted names and filters: `..[0]` is `[0]`, `..[*]` is `[*]`.
    let json = r#"[[1,2],{"a":[3]}]"#;
    assert_eq!(all("$..[0]", json), all("$[0]", json));
    assert_eq!(all("$..[*]", json), s(&["[1,2]", r#"{"a":[3]}"#]));
    assert_eq!(all("$..[0:1]", json), s(&["[1,2]"]));
    assert!(all("$..[*]", r#"{"a":[1]}"#).is_empty());
}

// ---------------------------------------------------------------------------------------------
// recursive descent

#[test]
fn scan_by_name() {
    // EvaluateScan / EvaluateScanNestResults
    assert_eq!(all("$..Name", r#"[{"Name":1},{"Name":2}]"#), s(&["1", "2"]));
    assert_eq!(
        all(
            "$..Name",
            r#"[{"Name":1},{"Name":2},{"Name":{"Name":[3]}}]"#
        ),
        s(&["1", "2", r#"{"Name":[3]}"#, "[3]"])
    );
    // SelectTokenAfterEmptyContainer
    assert_eq!(
        all("$..test", r#"{"cont":[],"test":"no one will find me"}"#),
        s(&["\"no one will find me\""])
    );
    // the start node itself is not a member: `..name` never yields it
    assert!(all("$.a..a", r#"{"a":{"b":1}}"#).is_empty());
    assert_eq!(all("..a", r#"{"a":{"a":1}}"#), s(&[r#"{"a":1}"#, "1"]));
}

#[test]
fn scan_with_hyphen_name() {
    // ParseWithEmptyArrayContent
    let json = r#"{"controls":[{"messages":{"addSuggestion":{"en-US":"Add"}}},
      {"header":{"controls":[]},"controls":[{"controls":[{"defaultCaption":{"en-US":"Sort by"},
      "sortOptions":[{"label":{"en-US":"Name"}}]}]}]}]}"#;
    assert_eq!(
        all("$..en-US", json),
        s(&["\"Add\"", "\"Sort by\"", "\"Name\""])
    );
}

#[test]
fn scan_quoted_and_multiple() {
    let json = r#"{
      "Node1": {
        "Child1": { "Name": "IsMe", "TargetNode": { "Prop1": "Val1", "Prop2": "Val2" } },
        "My.Child.Node": { "TargetNode": { "Prop1": "Val3", "Prop2": "Val4" } }
      },
      "Node2": { "TargetNode": { "Prop1": "Val5", "Prop2": "Val6" } }
    }"#;
    assert_eq!(count("$..['My.Child.Node']", json), 1);
    assert_eq!(count("..['My.Child.Node']", json), 1);
    let r = all("$..['My.Child.Node','Prop1','Prop2']", json);
    assert_eq!(r.len(), 7);
    assert_eq!(&r[0..2], &s(&["\"Val1\"", "\"Val2\""])[..]);
    assert!(r[2].starts_with('{'));
    assert_eq!(
        &r[3..],
        &s(&["\"Val3\"", "\"Val4\"", "\"Val5\"", "\"Val6\""])[..]
    );
    assert_eq!(all("$..['a','a']", r#"{"a":1}"#), s(&["1", "1"]));
}

#[test]
fn scan_wildcard_includes_the_start_node() {
    // EvaluateWildcardScan / EvaluateWildcardScanNestResults
    assert_eq!(
        all("$..*", r#"[{"Name":1},{"Name":2}]"#),
        s(&[
            r#"[{"Name":1},{"Name":2}]"#,
            r#"{"Name":1}"#,
            "1",
            r#"{"Name":2}"#,
            "2"
        ])
    );
    assert_eq!(
        count("$..*", r#"[{"Name":1},{"Name":2},{"Name":{"Name":[3]}}]"#),
        9
    );
    assert_eq!(all("$..* ", "5"), s(&["5"]));
    // RecursiveWildcard
    let json = r#"{"a":[{"id":1}],"b":[{"id":2},{"id":3,"c":{"id":4}}],"d":[{"id":5}]}"#;
    assert_eq!(all("$.b..*.id", json), s(&["2", "3", "4"]));
}

#[test]
fn repeated_dots_collapse_into_one_scan() {
    let json = r#"{"x":{"b":1}}"#;
    assert_eq!(all("$...b", json), s(&["1"]));
    assert_eq!(all("$....b", json), s(&["1"]));
}

// ---------------------------------------------------------------------------------------------
// filters

#[test]
fn existence_is_not_truthiness() {
    let json = r#"[{"x":null},{"x":false},{"x":0},{"x":""},{"x":[]},{"x":{}},{"y":1}]"#;
    assert_eq!(count("$[?(@.x)]", json), 6);
    assert_eq!(count("$[?(@x)]", json), 6);
    assert_eq!(count("$..[?(@x)]", json), 6);
}

#[test]
fn at_name_without_a_dot() {
    let json = r#"{"Body":{"systolic":120,"diastolic":80},"x":[{"heartRate":1},{"steps":2}]}"#;
    assert_eq!(count("$..[?(@Body.systolic && @Body.diastolic)]", json), 1);
    assert_eq!(all("$.x[?(@heartRate)]", json), s(&[r#"{"heartRate":1}"#]));
    assert_eq!(all("$.x[?(@.heartRate)]", json), s(&[r#"{"heartRate":1}"#]));
    assert_eq!(
        all("$.x[?(@['heartRate'])]", json),
        s(&[r#"{"heartRate":1}"#])
    );
    assert_eq!(all("$[?(@[0])]", "[[1],[],[null]]"), s(&["[1]", "[null]"]));
}

#[test]
fn scan_filter_tests_the_start_node_first() {
    let flat = r#"{"heartrate":"78","date":"2024-01-01"}"#;
    assert_eq!(all("$..[?(@heartrate)]", flat), s(&[flat]));
    assert_eq!(
        one("$..[?(@heartrate)]", flat).unwrap(),
        Some(flat.to_owned())
    );
    // on the event wrapper only the root matches `@Body.heartrate`
    let r = all("$..[?(@Body.heartrate)]", IOT_HUB);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0], text(&doc(IOT_HUB)));
    // pre-order: parent before children
    let json = r#"{"a":{"x":1,"b":{"x":2}},"c":[{"x":3}],"x":0}"#;
    assert_eq!(
        all("$..[?(@.x)]", json),
        s(&[json, r#"{"x":1,"b":{"x":2}}"#, r#"{"x":2}"#, r#"{"x":3}"#])
    );
    // a scalar start node is tested too
    assert_eq!(all("$.a..[?(@ == 1)]", r#"{"a":1}"#), s(&["1"]));
}

#[test]
fn scan_filter_visits_members_too() {
    // ScanFilterTrue: 25 tokens, members (JProperty) included
    assert_eq!(tokens("$.elements..[?(true)]", ELEMENTS).len(), 25);
    assert_eq!(
        tokens("$..[?(true)]", r#"{"a":[1]}"#),
        s(&[r#"{"a":[1]}"#, "a:[1]", "[1]", "1"])
    );
    // FilterTrue
    assert_eq!(count("$.elements[?(true)]", ELEMENTS), 2);
    // ScanFilter
    assert_eq!(
        all("$.elements..[?(@.id=='AAA')]", ELEMENTS),
        s(&[r#"{"id":"AAA"}"#])
    );
}

#[test]
fn filter_on_object_tests_members_not_values() {
    let json = r#"{"obj":{"a":{"x":1},"b":{"x":2}}}"#;
    assert!(all("$.obj[?(@.x)]", json).is_empty());
    assert_eq!(
        tokens("$.obj[?(@)]", json),
        s(&[r#"a:{"x":1}"#, r#"b:{"x":2}"#])
    );
    assert_eq!(
        tokens("$.obj[?(@..x)]", json),
        s(&[r#"a:{"x":1}"#, r#"b:{"x":2}"#])
    );
    assert_eq!(
        tokens("$.obj[?(@[?(@.x == 2)])]", json),
        s(&[r#"b:{"x":2}"#])
    );
    let e = eval_error("$.obj[?(@)]", json);
    assert!(matches!(e, JsonPathError::PropertyToken { .. }), "{e}");
    let d = doc(json);
    assert!(matches!(
        compile("$.obj[?(@)]").select_one(Scope::Token(&d)),
        Err(JsonPathError::MultipleTokens { .. })
    ));
    assert!(matches!(
        compile("$.obj[?(@..x == 2)]").select_one(Scope::Token(&d)),
        Err(JsonPathError::PropertyToken { .. })
    ));
    // members never have members: steps after them find nothing
    assert!(all("$.obj[?(@)].x", json).is_empty());
    // `..*` after a member-yielding filter yields the member, then the values below it
    assert_eq!(
        tokens("$.obj[?(@..x == 2)]..*", json),
        s(&[r#"b:{"x":2}"#, r#"{"x":2}"#, "2"])
    );
}

#[test]
fn newtonsoft_filter_cases() {
    // ExistsQuery
    assert_eq!(
        all("[ ?( @.hi ) ]", r#"[{"hi":"ho"},{"hi2":"ha"}]"#),
        s(&[r#"{"hi":"ho"}"#])
    );
    // EqualsQuery
    assert_eq!(
        all("[ ?( @.['hi'] == 'ha' ) ]", r#"[{"hi":"ho"},{"hi":"ha"}]"#),
        s(&[r#"{"hi":"ha"}"#])
    );
    // NotEqualsQuery
    assert_eq!(
        all("[ ?( @..hi <> 'ha' ) ]", r#"[[{"hi":"ho"}],[{"hi":"ha"}]]"#),
        s(&[r#"[{"hi":"ho"}]"#])
    );
    // NoPathQuery
    assert_eq!(all("[ ?( @ > 1 ) ]", "[1,2,3]"), s(&["2", "3"]));
    // MultipleQueries: the first filter yields numbers, which have no children
    assert!(all("[?(@ <> 1)][?(@ <> 4)][?(@ < 7)]", "[1,2,3,4,5,6,7,8,9]").is_empty());
    // GreaterQuery / LesserQuery_ValueFirst / GreaterOrEqualQuery
    let his = r#"[{"hi":1},{"hi":2},{"hi":3}]"#;
    assert_eq!(
        all("[ ?( @.hi > 1 ) ]", his),
        s(&[r#"{"hi":2}"#, r#"{"hi":3}"#])
    );
    assert_eq!(
        all("[ ?( 1 < @.hi ) ]", his),
        s(&[r#"{"hi":2}"#, r#"{"hi":3}"#])
    );
    assert_eq!(
        count(
            "[ ?( @.hi >= 1 ) ]",
            r#"[{"hi":1},{"hi":2},{"hi":2.0},{"hi":3}]"#
        ),
        4
    );
    // NestedQuery
    let movies = r#"[
      {"name":"Bad Boys","cast":[{"name":"Will Smith"}]},
      {"name":"Independence Day","cast":[{"name":"Will Smith"}]},
      {"name":"The Rock","cast":[{"name":"Nick Cage"}]}]"#;
    assert_eq!(
        all("[?(@.cast[?(@.name=='Will Smith')])].name", movies),
        s(&["\"Bad Boys\"", "\"Independence Day\""])
    );
    // MultiplePaths
    let prices = r#"[{"price":199,"max_price":200},{"price":200,"max_price":200},{"price":201,"max_price":200}]"#;
    assert_eq!(
        all("[?(@.price > @.max_price)]", prices),
        s(&[r#"{"price":201,"max_price":200}"#])
    );
    // Exists_True
    assert_eq!(count("[?(true)]", prices), 3);
    assert_eq!(count("[?(null)]", prices), 3, "a literal always exists");
    // QueryWithEscapedPath
    let props = r#"{"Property":[{"@Name":"x","@Value":"y","@Type":"FindMe"}]}"#;
    assert_eq!(count("$..[?(@.['@Type'] == 'FindMe')]", props), 1);
    // Equals_FloatWithInt
    assert!(
        one(
            "Values[?(@.Property == 1.0)]",
            r#"{"Values":[{"Property":1}]}"#
        )
        .unwrap()
        .is_some()
    );
    // WildcardWithProperty
    let stations = r#"{"station":92000041000001,"containers":[
      {"id":1,"text":"Sort system","containers":[
        {"id":"2","text":"Yard 11"},{"id":"92000020100006","text":"Sort yard 12"},
        {"id":"92000020100005","text":"Yard 13"}]},
      {"id":"92000020100011","text":"TSP-1"},{"id":"92000020100007","text":"Passenger 15"}]}"#;
    let texts: Vec<String> = all("$..*[?(@.text)].text", stations);
    assert_eq!(
        texts,
        s(&[
            "\"Sort system\"",
            "\"TSP-1\"",
            "\"Passenger 15\"",
            "\"Yard 11\"",
            "\"Sort yard 12\"",
            "\"Yard 13\""
        ])
    );
}

#[test]
fn newtonsoft_not_equals_and_non_primitive_values() {
    let json = r#"[{"name":"string","value":"aString"},{"name":"number","value":123},
      {"name":"array","value":[1,2,3,4]},{"name":"object","value":{"1":1}}]"#;
    assert_eq!(count("$.[?(@.value!=1)]", json), 4);
    assert_eq!(
        count("$.[?(@.value!='2000-12-05T05:07:59-10:00')]", json),
        4
    );
    assert_eq!(count("$.[?(@.value!=null)]", json), 4);
    assert_eq!(count("$.[?(@.value!=123)]", json), 3);
    assert_eq!(count("$.[?(@.value)]", json), 4);
    // strict inequality is false against containers
    assert_eq!(count("$.[?(@.value!==123)]", json), 1);
}

#[test]
fn newtonsoft_root_in_filter() {
    let wrapped = format!("[{STORE}]");
    assert_eq!(
        count("$.[?($.[0].store.bicycle[0].price < 20)]", &wrapped),
        1
    );
    assert_eq!(
        count("$.[?($.[0].store.bicycle[0].price < 10)]", &wrapped),
        0
    );
    // RootInFilterWithRootObject
    assert_eq!(count("$..book[?(@.price <= $['expensive'])]", STORE), 2);
    assert_eq!(count("$.store..[?(@.price > $.expensive)]", STORE), 3);
}

#[test]
fn newtonsoft_identity_operator() {
    let json = r#"{"Values":[{"Coercible":1,"Name":"Number"},{"Coercible":"1","Name":"String"}]}"#;
    assert_eq!(
        all("Values[?(@.Coercible == '1')].Name", json),
        s(&["\"String\""])
    );
    assert_eq!(
        all("Values[?(@.Coercible != '1')].Name", json),
        s(&["\"Number\""])
    );
    assert_eq!(
        all("Values[?(@.Coercible === 1)].Name", json),
        s(&["\"Number\""])
    );
    assert_eq!(
        all("Values[?(@.Coercible !== 1)].Name", json),
        s(&["\"String\""])
    );
    assert_eq!(
        all("Values[?(@.Coercible === '1')].Name", json),
        s(&["\"String\""])
    );
    assert_eq!(
        all("Values[?(@.Coercible !== '1')].Name", json),
        s(&["\"Number\""])
    );
}

#[test]
fn newtonsoft_strict_match_table() {
    let table = [
        ("1", "1", true),
        ("1", "1.0", true),
        ("1", "true", false),
        ("1", "'1'", false),
        ("'1'", "'1'", true),
        ("false", "false", true),
        ("true", "false", false),
        ("1", "1.1", false),
        ("1", "null", false),
        ("null", "null", true),
        ("null", "'null'", false),
    ];
    for (a, b, expected) in table {
        for (v1, v2) in [(a, b), (b, a)] {
            let json = format!(
                r#"{{"Values":[{{"Property":{}}}]}}"#,
                v1.replace('\'', "\"")
            );
            let eq = count(&format!("$.Values[?(@.Property === {v2})]"), &json) == 1;
            let ne = count(&format!("$.Values[?(@.Property !== {v2})]"), &json) == 1;
            assert_eq!(eq, expected, "{v1} === {v2}");
            assert_eq!(ne, !expected, "{v1} !== {v2}");
            let eq = count(&format!("$.Values[?(@.Property == {v2})]"), &json) == 1;
            assert_eq!(eq, expected, "{v1} == {v2}");
        }
    }
}

#[test]
fn newtonsoft_string_number_comparisons() {
    // GreaterThanWithIntegerParameterAndStringValue: the string converts to the literal's type
    let persons = r#"{"persons":[{"name":"John","age":"26"},{"name":"Jane","age":"2"}]}"#;
    assert_eq!(count("$.persons[?(@.age > 3)]", persons), 1);
    // GreaterThanWithStringParameterAndIntegerValue
    let persons = r#"{"persons":[{"name":"John","age":26},{"name":"Jane","age":2}]}"#;
    assert_eq!(count("$.persons[?(@.age > '3')]", persons), 1);
    // GreaterThanIssue1518
    let json = r#"{"usingmem":"214376"}"#;
    for threshold in ["10", "27000", "21437", "21438"] {
        assert_eq!(
            one(&format!("$..[?(@.usingmem>{threshold})]"), json).unwrap(),
            Some(json.to_owned())
        );
    }
    assert_eq!(count("$[?(@ > 250000)]", r#"["214376"]"#), 0);
    // a string that does not convert is an error, as .NET throws
    let e = eval_error("$[?(@.a > 3)]", r#"[{"a":"abc"}]"#);
    assert!(matches!(e, JsonPathError::Conversion { .. }), "{e}");
    assert!(e.to_string().contains("\"abc\""), "{e}");
    assert!(matches!(
        eval_error("$[?(@.a < 'x')]", r#"[{"a":1.5}]"#),
        JsonPathError::Conversion { .. }
    ));
    assert!(matches!(
        eval_error("$[?(@.a < 'maybe')]", r#"[{"a":true}]"#),
        JsonPathError::Conversion { .. }
    ));
    // ...but only when a comparison actually runs
    assert!(all("$[?(@.b > 3)]", r#"[{"a":"abc"}]"#).is_empty());
    assert_eq!(count("$[?(@.a == 3)]", r#"[{"a":"abc"}]"#), 0);
}

#[test]
fn comparison_semantics() {
    let n = r#"[{"v":1},{"v":1.0},{"v":2.5},{"v":"1"},{"v":"b"},{"v":true},{"v":null},{"v":[1]},{"v":{"a":1}},{"w":1}]"#;
    assert_eq!(count("$[?(@.v == 1)]", n), 2);
    assert_eq!(count("$[?(@.v == 1.0)]", n), 2);
    assert_eq!(count("$[?(@.v == '1')]", n), 1);
    assert_eq!(count("$[?(@.v == true)]", n), 1);
    assert_eq!(count("$[?(@.v == null)]", n), 1);
    assert_eq!(
        count("$[?(@.v != 1)]", n),
        7,
        "missing v has no pair, containers are !="
    );
    assert_eq!(
        count(
            "$[?(@.v > null)]",
            r#"[{"v":1},{"v":"a"},{"v":null},{"v":false}]"#
        ),
        3
    );
    assert_eq!(count("$[?(@.v <= null)]", r#"[{"v":1},{"v":null}]"#), 1);
    assert_eq!(count("$[?(null < @.v)]", r#"[{"v":1},{"v":null}]"#), 1);
    assert_eq!(
        count("$[?(@.v > 'a')]", r#"[{"v":"b"},{"v":"a"},{"v":"B"}]"#),
        1
    );
    assert_eq!(
        count("$[?(@.v < 'b')]", r#"[{"v":"B"},{"v":"ab"},{"v":"b"}]"#),
        2
    );
    // float tolerance (MathUtils.ApproxEquals) and int/float mixing
    assert_eq!(
        count("$[?(@.v == 0.3)]", r#"[{"v":0.30000000000000004}]"#),
        1
    );
    assert_eq!(
        count("$[?(@.v > 2)]", r#"[{"v":2.0000000000000004},{"v":2.5}]"#),
        1
    );
    assert_eq!(count("$[?(@.v >= 2)]", r#"[{"v":1.9999999999999998}]"#), 1);
    // booleans order false < true, and numbers convert to booleans
    assert_eq!(count("$[?(@.v > false)]", r#"[{"v":true},{"v":false}]"#), 1);
    assert_eq!(count("$[?(@.v > false)]", r#"[{"v":5}]"#), 1);
    assert_eq!(count("$[?(@.v < 'True')]", r#"[{"v":false}]"#), 1);
    // big integers (above i64) compare exactly
    let big = r#"[{"v":18446744073709551615},{"v":9223372036854775807}]"#;
    assert_eq!(count("$[?(@.v > 9223372036854775807)]", big), 1);
    assert_eq!(count("$[?(@.v == 9223372036854775807)]", big), 1);
    assert_eq!(count("$[?(@.v > 1.5)]", big), 2);
    assert_eq!(
        count(
            "$[?(@.v < '99999999999999999999999')]",
            r#"[{"v":18446744073709551615}]"#
        ),
        1
    );
    // ...but a long converts the string with Convert.ToInt64, which overflows
    assert!(matches!(
        eval_error("$[?(@.v < '99999999999999999999999')]", big),
        JsonPathError::Conversion { .. }
    ));
    // literals on both sides
    assert_eq!(count("$[?(1 == 1)]", "[0,0]"), 2);
    assert_eq!(count("$[?('a' == 'b')]", "[0,0]"), 0);
    // multiple tokens on a side: any pair
    let arrs = r#"[{"v":[1,2,3]},{"v":[4]}]"#;
    assert_eq!(count("$[?(@.v[*] == 2)]", arrs), 1);
    assert_eq!(count("$[?(@.v[*] > @.v[0])]", arrs), 1);
    // containers only satisfy !=
    assert_eq!(count("$[?(@ == @)]", r#"[{"a":1},[1],1]"#), 1);
    assert_eq!(count("$[?(@ != 5)]", r#"[{"a":1},[1],1]"#), 3);
    assert_eq!(count("$[?(@ > 5)]", r#"[{"a":1},[1],6]"#), 1);
}

#[test]
fn number_literals() {
    assert_eq!(count("$[?(@ == 1e3)]", "[1000]"), 1);
    assert_eq!(count("$[?(@ == -12)]", "[-12]"), 1);
    assert_eq!(count("$[?(@>=5.56789e+0)]", "[5.56789, 5]"), 1);
    // .NET allows thousands separators in floats
    assert_eq!(count("$[?(@ == 1,000.5)]", "[1000.5]"), 1);
    syntax("$[?(@ == 1,000)]");
    syntax("$[?(@ == 99999999999999999999)]");
    syntax("$[?(@ == 1.2.3)]");
    // a number ends only at a space or ')'
    let (_, message) = syntax("$[?(@.a==1&&@.b==2)]");
    assert!(message.contains("space or ')'"), "{message}");
    assert_eq!(
        count("$[?(@.a==1 && @.b==2)]", r#"[{"a":1,"b":2},{"a":1}]"#),
        1
    );
    syntax("$[?(@.a==1]");
}

#[test]
fn and_or_have_no_precedence() {
    // Newtonsoft: `a && b || c` is `a && (b || c)`
    let json = r#"[{"b":1,"c":1}]"#;
    assert_eq!(count("$[?(@.a && @.b || @.c)]", json), 0);
    assert_eq!(count("$[?(@.c || @.a && @.b)]", json), 1);
    // `a || b && c || d` is `a || (b && (c || d))`
    assert_eq!(count("$[?(@.a || @.b && @.x || @.c)]", json), 1);
    assert_eq!(count("$[?(@.a || @.x && @.b || @.c)]", json), 0);
    assert_eq!(
        count("$[?(@heartrate || @steps)]", r#"[{"steps":1},{"hr":2}]"#),
        1
    );
    assert_eq!(
        count(
            "$..[?(@systolic && @diastolic && @measurementdatetime)]",
            r#"{"systolic":1,"diastolic":2,"measurementdatetime":3}"#
        ),
        1
    );
}

#[test]
fn stray_operand_replaces_the_previous_comparison() {
    // Newtonsoft drops a complete comparison followed by another operand without && or ||.
    assert_eq!(count("$[?(@.a == 1 @.b)]", r#"[{"b":1},{"a":1}]"#), 1);
    assert_eq!(
        all("$[?(@.a == 1 @.b)]", r#"[{"b":1},{"a":1}]"#),
        s(&[r#"{"b":1}"#])
    );
}

#[test]
fn no_grouping_parentheses() {
    syntax("$[?((@.a))]");
    syntax("$[?(@.a && (@.b || @.c))]");
}

#[test]
fn regex_match() {
    let books = all("$.store.book[?(@.title =~ /^.*Sword.*$/)].author", STORE);
    assert_eq!(books, s(&["\"Evelyn Waugh\""]));
    assert_eq!(count("$..book[?(@.author =~ /nigel/i)]", STORE), 1);
    assert_eq!(count("$..book[?(@.author =~ /nigel/)]", STORE), 0);
    assert_eq!(count("$..book[?(@.author =~ /R\\. R/)]", STORE), 1);
    assert_eq!(count("$[?(@ =~ /a.b/s)]", "[\"a\\nb\",\"axb\"]"), 2);
    assert_eq!(count("$[?(@ =~ /a.b/)]", "[\"a\\nb\",\"axb\"]"), 1);
    assert_eq!(count("$[?(@ =~ /^b$/m)]", "[\"a\\nb\"]"), 1);
    assert_eq!(count("$[?(@ =~ /\\//)]", "[\"a/b\",\"ab\"]"), 1);
    // Newtonsoft's escaped-regex parse test compiles
    compile(r"Blah[?(@.title =~ /[\-\[\]\/\{\}\(\)\*\+\?\.\\\^\$\|]/g)]");
    // non-strings never match
    assert_eq!(count("$[?(@ =~ /1/)]", "[1, \"1\", true, null]"), 1);
    // a regex literal is a string: `==` compares the text
    assert_eq!(count("$[?(@ == /x/i)]", "[\"/x/i\",\"x\"]"), 1);
    // a quoted string works as a regex too
    assert_eq!(count("$[?(@ =~ '/^x/')]", "[\"xy\",\"yx\"]"), 1);
    // the pattern may come from the document
    assert_eq!(
        count("$.v[?(@ =~ $.p)]", r#"{"p":"/^a/","v":["ab","ba"]}"#),
        1
    );
    let e = eval_error("$.v[?(@ =~ $.p)]", r#"{"p":"^a","v":["ab"]}"#);
    assert!(matches!(e, JsonPathError::Regex { .. }), "{e}");
    assert!(
        eval_error("$.v[?(@ =~ $.p)]", r#"{"p":"/(/","v":["ab"]}"#)
            .to_string()
            .contains("\"/(/\"")
    );
    // ...and an unusable document pattern only fails when a string meets it
    assert!(all("$.v[?(@ =~ $.p)]", r#"{"p":"^a","v":[1]}"#).is_empty());
}

#[test]
fn unusable_regex_literals_fail_to_compile() {
    let (position, message) = syntax("$[?(@ =~ /(a/)]");
    assert_eq!(position, 10);
    assert!(message.contains("regular expression"), "{message}");
    let (_, message) = syntax(r"$[?(@ =~ /(a)\1/)]");
    assert!(message.contains("backreferences"), "{message}");
    syntax("$[?(@ =~ 'abc')]");
    let (_, message) = syntax(r"Blah[?(@.title =~ /[\");
    assert!(message.contains("not closed"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// SelectToken

#[test]
fn select_one_results() {
    assert_eq!(one("$.a", r#"{"a":1}"#).unwrap(), Some("1".to_owned()));
    assert_eq!(one("$.b", r#"{"a":1}"#).unwrap(), None);
    assert_eq!(one("$.a[5]", r#"{"a":[1]}"#).unwrap(), None);
    assert_eq!(
        one("$.a[?(@ > 1)]", r#"{"a":[1,2]}"#).unwrap(),
        Some("2".to_owned())
    );
    let e = one("[0, 1]", "[1,2,3,4,5]").unwrap_err();
    assert_eq!(
        e,
        JsonPathError::MultipleTokens {
            expression: "[0, 1]".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "expression [0, 1] returned more than one token; make it select a single value"
    );
    // duplicates count as multiple
    assert!(matches!(
        one("$['a','a']", r#"{"a":1}"#),
        Err(JsonPathError::MultipleTokens { .. })
    ));
    // SelectToken stops at the second token: a later error never surfaces
    assert!(matches!(
        one("$.x[0,1,-1]", r#"{"x":[1,2,3]}"#),
        Err(JsonPathError::MultipleTokens { .. })
    ));
    assert!(matches!(
        eval_error("$.x[0,1,-1]", r#"{"x":[1,2,3]}"#),
        JsonPathError::NegativeIndex { index: -1, .. }
    ));
    assert!(matches!(
        one("$.x[*][0,-1]", r#"{"x":[[1],[2],[3]]}"#),
        Err(JsonPathError::NegativeIndex { .. })
    ));
    assert!(matches!(
        one("$.x[*][0]", r#"{"x":[[1],[2],[3]]}"#),
        Err(JsonPathError::MultipleTokens { .. })
    ));
    assert!(matches!(
        one("$.x[?(@ > 'a')]", r#"{"x":[1,2,"z"]}"#),
        Err(JsonPathError::Conversion { .. })
    ));
    assert!(matches!(
        one("$.x[?(@ > 0)]", r#"{"x":[1,2,"z"]}"#),
        Err(JsonPathError::MultipleTokens { .. })
    ));
}

#[test]
fn select_all_simple_and_general_paths_agree() {
    let json = r#"{"a":{"b":[10,{"c":"x"}]}}"#;
    let d = doc(json);
    for path in ["$.a.b[1].c", "a.b[0]", "$", "", "$.a.b[2]", "$.zz"] {
        let p = compile(path);
        assert!(p.simple, "{path}");
        let nodes = p.select_nodes(Scope::Token(&d)).unwrap();
        let values = p.try_select_all(&d).unwrap();
        assert_eq!(nodes.len(), values.len(), "{path}");
    }
    assert_eq!(all("$.a.b[1].c", json), s(&["\"x\""]));
    assert!(!compile("$.a.*").simple);
}

// ---------------------------------------------------------------------------------------------
// the WithMatch overlay

#[test]
fn with_match_overlay_basics() {
    let root = doc(
        r#"{"Body":[{"systolic":"120","date":"d1"},{"systolic":"122","date":"d2"}],"Properties":{"deviceId":"dev"}}"#,
    );
    let type_match = compile("$..[?(@systolic)]");
    let matches = type_match.try_select_all(&root).unwrap();
    assert_eq!(matches.len(), 2);
    let device = compile("$.Properties.deviceId");
    let systolic = compile("$.matchedToken.systolic");
    let want = ["\"120\"", "\"122\""];
    for (m, want) in matches.into_iter().zip(want) {
        let scope = Scope::WithMatch {
            root: &root,
            matched: m,
        };
        match device.select_one(scope).unwrap() {
            Some(Node::Value(v)) => assert_eq!(text(v), "\"dev\""),
            other => panic!("{other:?}"),
        }
        match systolic.select_one(scope).unwrap() {
            Some(Node::Value(v)) => assert_eq!(text(v), want),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            compile("$").select_one(scope),
            Ok(Some(Node::ScopeRoot))
        ));
        assert!(matches!(
            compile("").select_one(scope),
            Ok(Some(Node::ScopeRoot))
        ));
        assert!(matches!(
            compile("$..[?(@matchedToken)]").select_one(scope),
            Ok(Some(Node::ScopeRoot))
        ));
        assert!(matches!(
            compile("$.Body[0]").select_one(scope),
            Ok(Some(Node::Value(_)))
        ));
    }
}

#[test]
fn with_match_overlay_replaces_an_existing_matched_token() {
    let root = doc(r#"{"a":1,"matchedToken":{"old":true},"b":2}"#);
    let matched = doc(r#"{"new":true}"#);
    let scope = Scope::WithMatch {
        root: &root,
        matched: &matched,
    };
    let p = compile("$.*");
    let got: Vec<String> = p
        .select_nodes(scope)
        .unwrap()
        .into_iter()
        .map(|n| match n {
            Node::Value(v) => text(v),
            Node::ScopeRoot => "root".into(),
        })
        .collect();
    assert_eq!(got, s(&["1", "2", r#"{"new":true}"#]));
    assert!(
        compile("$.matchedToken.old")
            .select_one(scope)
            .unwrap()
            .is_none()
    );
    assert!(compile("$..old").select_one(scope).unwrap().is_none());
}

#[test]
fn with_match_overlay_equals_materialized_object() {
    let documents = [
        (
            r#"{"Body":[{"systolic":"120","diastolic":"80","date":"2024-01-01T12:34:56.789Z"},{"systolic":"122"}],"Properties":{"deviceId":"dev"}}"#,
            r#"{"systolic":"120","diastolic":"80","date":"2024-01-01T12:34:56.789Z"}"#,
        ),
        (
            r#"{"a":1,"matchedToken":[1,2],"b":{"matchedToken":3}}"#,
            r#"[5,{"x":null}]"#,
        ),
        (r#"{"heartrate":70}"#, r#"{"heartrate":70}"#),
        (r#"{"x":{"y":{"z":[1,2,{"w":"v"}]}},"e":{},"f":[]}"#, "7"),
        ("[1,2]", r#"{"k":"v"}"#),
        ("{}", "null"),
    ];
    let paths = [
        "$",
        "",
        "$.*",
        "$..*",
        "$..x",
        "$..matchedToken",
        "$.matchedToken",
        "$.matchedToken.systolic",
        "matchedToken.systolic",
        "$.Properties.deviceId",
        "$['matchedToken','a','matchedToken']",
        "$..['matchedToken','z']",
        "$..[?(@systolic)]",
        "$..[?(@.matchedToken)]",
        "$..[?(@matchedToken.heartrate)]",
        "$..[?(@ == 1)]",
        "$..[?(@ != 1)]",
        "$..[?($.matchedToken)]",
        "$.*[?(@.x != $.a)]",
        "$[?(@)]",
        "$[?(@.x)]",
        "$.matchedToken[*]",
        "$.matchedToken[-1]",
        "$.matchedToken[1:]",
        "$..[0]",
        "$..w",
        "$.Body[?(@.systolic > 119)].date",
        "$..[?(@..z)]",
    ];
    for (root_json, matched_json) in documents {
        let root = doc(root_json);
        let matched = doc(matched_json);
        for path in paths {
            let p = compile(path);
            let (overlay, plain) = overlay_and_materialized(&p, &root, &matched);
            assert_eq!(overlay, plain, "{path} on {root_json} + {matched_json}");
            let m = materialize(&root, &matched);
            let one_overlay = p
                .select_one(Scope::WithMatch {
                    root: &root,
                    matched: &matched,
                })
                .map(|n| n.is_some());
            let one_plain = p.select_one(Scope::Token(&m)).map(|n| n.is_some());
            assert_eq!(one_overlay, one_plain, "select_one {path} on {root_json}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the connector's templates

/// Every distinct expression in the conformance corpus (templates and inputs), as of writing.
const CONFORMANCE_JSONPATH: &[&str] = &[
    "",
    "$..[?(@.deviceType == 'deviceTypeA')]",
    "$..[?(@.type=='Blood Pressure')]",
    "$..[?(@.type=='Heart Rate')]",
    "$..[?(@.type=='Oxygen Saturation')]",
    "$..[?(@Body.BloodPressure.Systolic && @Body.BloodPressure.Diastolic)]",
    "$..[?(@Body.BodyTemperature)]",
    "$..[?(@Body.ExcessiveActivityReached)]",
    "$..[?(@Body.HeartRate)]",
    "$..[?(@Body.HeartRateVariability)]",
    "$..[?(@Body.KneeBend)]",
    "$..[?(@Body.MaxDayActivityReached)]",
    "$..[?(@Body.MinDayActivityReached)]",
    "$..[?(@Body.NotEnoughActivityReached)]",
    "$..[?(@Body.RangeOfMotion)]",
    "$..[?(@Body.RespiratoryRate)]",
    "$..[?(@Body.Systolic && @Body.Diastolic)]",
    "$..[?(@Body.deviceOffBoot)]",
    "$..[?(@Body.deviceOnBoot)]",
    "$..[?(@Body.deviceProvisioned)]",
    "$..[?(@Body.heartrate)]",
    "$..[?(@Body.patientActiveTime || @Body.patientOffBootTime || @Body.patientRestingTime || @Body.patientUnknownTime)]",
    "$..[?(@Body.patientRemovingBoot)]",
    "$..[?(@Body.patientSteps)]",
    "$..[?(@Body.patientWearingBoot)]",
    "$..[?(@Body.systolic && @Body.diastolic)]",
    "$..[?(@['My Property'])]",
    "$..[?(@activeEnergyBurned)]",
    "$..[?(@appleExerciseTime)]",
    "$..[?(@appleStandTime)]",
    "$..[?(@bloodGlucose)]",
    "$..[?(@bodyMass)]",
    "$..[?(@bodyTemperature)]",
    "$..[?(@deviceRemoved)]",
    "$..[?(@deviceWorn)]",
    "$..[?(@diastolic && @systolic)]",
    "$..[?(@dietaryEnergyConsumed)]",
    "$..[?(@enrichments.Elevation)]",
    "$..[?(@environmentalAudioExposure)]",
    "$..[?(@heartRate && @endDate)]",
    "$..[?(@heartRate)]",
    "$..[?(@heartRateVariability)]",
    "$..[?(@heartrate && @date)]",
    "$..[?(@heartrate && @measurementdatetime)]",
    "$..[?(@heartrate || @steps)]",
    "$..[?(@heartrate)]",
    "$..[?(@height)]",
    "$..[?(@hrv && @measurementdatetime)]",
    "$..[?(@hrv)]",
    "$..[?(@oxygenSaturation)]",
    "$..[?(@respiratoryRate)]",
    "$..[?(@restingHeartRate)]",
    "$..[?(@stepCount)]",
    "$..[?(@steps && @measurementdatetime)]",
    "$..[?(@steps)]",
    "$..[?(@systolic && @diastolic && @measurementdatetime)]",
    "$..[?(@systolic && @diastolic)]",
    "$..[?(@systolic)]",
    "$..[?(@telemetry)]",
    "$..[?(@telemetry.BloodPressure.Diastolic && @telemetry.BloodPressure.Systolic)]",
    "$..[?(@telemetry.BloodPressure.Systolic && @telemetry.BloodPressure.Diastolic)]",
    "$..[?(@telemetry.BodyTemperature)]",
    "$..[?(@telemetry.HeartRate)]",
    "$..[?(@telemetry.HeartRateVariability)]",
    "$..[?(@telemetry.KneeBend)]",
    "$..[?(@telemetry.RangeOfMotion)]",
    "$..[?(@telemetry.RespiratoryRate)]",
    "$..[?(@unit == 'inches')]",
    "$..[?(@unit == 'meters')]",
    "$..[?(@walkingHeartRateAverage)]",
    "$.Body.BloodPressure.Diastolic",
    "$.Body.BloodPressure.Systolic",
    "$.Body.BodyTemperature",
    "$.Body.Diastolic",
    "$.Body.ExcessiveActivityReached",
    "$.Body.HeartRate",
    "$.Body.HeartRateVariability",
    "$.Body.KneeBend",
    "$.Body.MaxDayActivityReached",
    "$.Body.MinDayActivityReached",
    "$.Body.NotEnoughActivityReached",
    "$.Body.PatientId",
    "$.Body.RangeOfMotion",
    "$.Body.RespiratoryRate",
    "$.Body.Systolic",
    "$.Body.deviceId",
    "$.Body.deviceOffBoot",
    "$.Body.deviceOnBoot",
    "$.Body.deviceProvisioned",
    "$.Body.diastolic",
    "$.Body.heartrate",
    "$.Body.patientActiveTime",
    "$.Body.patientOffBootTime",
    "$.Body.patientRemovingBoot",
    "$.Body.patientRestingTime",
    "$.Body.patientSteps",
    "$.Body.patientUnknownTime",
    "$.Body.patientWearingBoot",
    "$.Body.systolic",
    "$.Body.userDetails.id",
    "$.Properties.deviceId",
    "$.Properties.iothub-creation-time-utc",
    "$.SystemProperties.iothub-connection-device-id",
    "$.SystemProperties.iothub-enqueuedtime",
    "$.Time",
    "$.['My Property']",
    "$.activeEnergyBurned",
    "$.appleExerciseTime",
    "$.appleStandTime",
    "$.badDeviceExpression",
    "$.bloodGlucose",
    "$.bodyMass",
    "$.bodyTemperature",
    "$.correlation",
    "$.correlationId",
    "$.date",
    "$.device",
    "$.deviceId",
    "$.deviceRemoved",
    "$.deviceWorn",
    "$.deviceid",
    "$.diastolic",
    "$.dietaryEnergyConsumed",
    "$.eid",
    "$.encounter",
    "$.encounterId",
    "$.endDate",
    "$.enqueuedTime",
    "$.enrichments.Elevation",
    "$.environmentalAudioExposure",
    "$.heartRate",
    "$.heartRateVariability",
    "$.heartrate",
    "$.height",
    "$.hrv",
    "$.matchedToken.date",
    "$.matchedToken.device",
    "$.matchedToken.deviceId",
    "$.matchedToken.diastolic",
    "$.matchedToken.endDate",
    "$.matchedToken.heartRate",
    "$.matchedToken.height",
    "$.matchedToken.patient",
    "$.matchedToken.startTime",
    "$.matchedToken.steps",
    "$.matchedToken.systolic",
    "$.matchedToken.timestamp",
    "$.matchedToken.userId",
    "$.measurementdatetime",
    "$.messageProperties.patientId",
    "$.missingField",
    "$.missingsession",
    "$.oxygenSaturation",
    "$.patient",
    "$.patientId",
    "$.patientid",
    "$.pid",
    "$.respiratoryRate",
    "$.restingHeartRate",
    "$.session",
    "$.sessionid",
    "$.stepCount",
    "$.steps",
    "$.systolic",
    "$.telemetry.Activity",
    "$.telemetry.BloodPressure.Diastolic",
    "$.telemetry.BloodPressure.Systolic",
    "$.telemetry.BodyTemperature",
    "$.telemetry.HeartRate",
    "$.telemetry.HeartRateVariability",
    "$.telemetry.KneeBend",
    "$.telemetry.RangeOfMotion",
    "$.telemetry.RespiratoryRate",
    "$.template.Activity",
    "$.template.BloodPressure.Diastolic",
    "$.time",
    "$.values.beatsPerMinute",
    "$.values.diastolic",
    "$.values.oxygenPercentage",
    "$.values.systolic",
    "$.walkingHeartRateAverage",
    "Body.userDetails.heightInMeters",
    "Properties.deviceId",
    "date",
    "device",
    "deviceId",
    "heartrate",
    "matchedToken.date",
    "matchedToken.device",
    "matchedToken.diastolic",
    "matchedToken.heartrate",
    "matchedToken.patient",
    "matchedToken.session",
    "matchedToken.steps",
    "matchedToken.systolic",
    "patient",
    "session",
    "steps",
    "123",
    "test",
    "patientId.deviceId..",
];

/// JMESPath expressions of the corpus, which are not JSONPath (Newtonsoft rejects them too).
const CONFORMANCE_JMESPATH: &[&str] = &[
    "Body[?systolic]",
    "add(left, right)",
    "divide(left, right)",
    "fromUnixTimestamp(timestamp)",
    "fromUnixTimestampMs(timestamp)",
    "insertString(original, toInsert, length(original))",
    "insertString(original, toInsert, pos)",
    "multiply(left, right)",
    "pow(left, right)",
    "subtract(left, right)",
    "to_array(@)[?heartrate || steps]",
    "to_array(@)[?heartrate]",
    "to_array(@)[?steps]",
    "divide(matchedToken.distanceInYards, `1.0936`)",
    "multiply(matchedToken.distanceInMiles, `1609.344`)",
    "to_array(@.Body) | [? deviceId && starts_with(deviceId, 'deviceTypeB')].data[] ",
];

#[test]
fn conformance_expressions_compile() {
    for path in CONFORMANCE_JSONPATH {
        if *path == "patientId.deviceId.." {
            // "Unexpected end while parsing path." in Newtonsoft as well
            syntax(path);
            continue;
        }
        compile(path);
    }
    for path in CONFORMANCE_JMESPATH {
        assert!(JsonPath::compile(path).is_err(), "{path}");
    }
}

#[test]
fn conformance_corpus_expressions_compile_when_present() {
    // Re-reads the corpus when it is available, so new templates are covered too.
    let root = std::path::Path::new("/work/shared/conformance");
    if !root.exists() {
        return;
    }
    let mut found = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(content) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(json) =
                serde_json::from_str::<serde_json::Value>(content.trim_start_matches('\u{feff}'))
            else {
                continue;
            };
            let mut values = vec![&json];
            while let Some(v) = values.pop() {
                match v {
                    serde_json::Value::Object(map) => {
                        let jmes = map
                            .get("defaultExpressionLanguage")
                            .and_then(|l| l.as_str())
                            == Some("JmesPath");
                        for (k, x) in map {
                            if k.ends_with("xpression") && !jmes {
                                if let Some(expr) = x.as_str() {
                                    found += 1;
                                    check_corpus_expression(expr, &path);
                                } else if let Some(obj) = x.as_object() {
                                    let lang = obj.get("language").and_then(|l| l.as_str());
                                    if lang != Some("JmesPath")
                                        && let Some(expr) =
                                            obj.get("value").and_then(|v| v.as_str())
                                    {
                                        found += 1;
                                        check_corpus_expression(expr, &path);
                                    }
                                }
                            }
                            values.push(x);
                        }
                    }
                    serde_json::Value::Array(items) => values.extend(items),
                    _ => {}
                }
            }
        }
    }
    assert!(found > 100, "only {found} expressions found");
}

fn check_corpus_expression(expr: &str, file: &std::path::Path) {
    let known_bad = CONFORMANCE_JMESPATH.contains(&expr) || expr == "patientId.deviceId..";
    if !known_bad && let Err(e) = JsonPath::compile(expr) {
        panic!("{} : {expr:?}: {e}", file.display());
    }
}

#[test]
fn conformance_behaviour_iot_hub() {
    let d = doc(IOT_HUB);
    let matches = compile("$..[?(@Body.heartrate)]")
        .try_select_all(&d)
        .unwrap();
    assert_eq!(matches.len(), 1);
    let scope = Scope::Token(matches[0]);
    let get = |p: &str| match compile(p).select_one(scope).unwrap() {
        Some(Node::Value(v)) => Some(text(v)),
        Some(Node::ScopeRoot) => panic!("no overlay"),
        None => None,
    };
    assert_eq!(get("$.Body.heartrate").as_deref(), Some("\"203\""));
    assert_eq!(
        get("$.SystemProperties.iothub-connection-device-id").as_deref(),
        Some("\"ev-d795-1d04-55ae\"")
    );
    assert_eq!(
        get("$.Properties.iothub-creation-time-utc").as_deref(),
        Some("\"2019-01-30T22:45:02.6073744Z\"")
    );
    assert_eq!(get("$.Body.steps"), None);
}

#[test]
fn conformance_behaviour_property_with_space_and_arrays() {
    let json = r#"{"My Property":"60","date":"2024-01-01","device":"d1"}"#;
    assert_eq!(count("$..[?(@['My Property'])]", json), 1);
    assert_eq!(
        one("$.['My Property']", json).unwrap().as_deref(),
        Some("\"60\"")
    );
    let json = r#"[{"heartrate":"78","date":"a"},{"heartrate":"80","date":"b"},{"steps":"1"}]"#;
    assert_eq!(count("$..[?(@heartrate)]", json), 2);
    assert_eq!(count("$..[?(@heartrate || @steps)]", json), 3);
    assert_eq!(count("$..[?(@heartrate && @date)]", json), 2);
    let json = r#"{"Body":[{"unit":"inches","v":1},{"unit":"meters","v":2}]}"#;
    assert_eq!(all("$..[?(@unit == 'inches')].v", json), s(&["1"]));
}

// ---------------------------------------------------------------------------------------------
// syntax errors

#[test]
fn newtonsoft_parse_errors() {
    for path in [
        "$ .Blah",
        "$.Blah.",
        "$. Blah",
        "$..",
        "[?(@.name||)]",
        "[?(@.name|)]",
        "[?(@.name|",
        "[?(@.name||",
        "[?(@.name||s",
        "[?(@.name||@",
        "[?(@.name||@.",
        "[?(@.name||@.)]",
        "[?(@.name&)]",
        "[?(@.name&&",
        "Blah[[0]].Two.Three[1].Four",
        "Blah[0",
        "[]",
        "]",
        ")",
        "$.a]",
        "[1]Blah",
        "['a']b",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[a]",
        "[-]",
        "[1-2]",
        "[2147483648]",
        "[*",
        "[* 1]",
        "['a'",
        "['a' 'b']",
        "['a",
        "[?",
        "[?@.a]",
        "[?(",
        "[?()]",
        "[?(@.a)",
        "[?(@.a) x",
        "[?(@.a == )]",
        "[?(@.a = 1)]",
        "[?(@.a ! 1)]",
        "[?(@.a == tru)]",
        "[?(@.a == 'x)]",
        "[?(x)]",
        "$.a b",
        "  $",
        "[  ",
        "$.a[",
        "$[?(@.a)]]",
    ] {
        syntax(path);
    }
}

#[test]
fn syntax_errors_name_position_and_expectation() {
    let (position, message) = syntax("$.a[0");
    assert_eq!(position, 6);
    assert!(message.contains("expected ']'"), "{message}");
    let (position, message) = syntax("$.a.");
    assert_eq!(position, 5);
    assert!(message.contains("member name"), "{message}");
    let (position, message) = syntax("$[0]x");
    assert_eq!(position, 5);
    assert!(message.contains("'x'"), "{message}");
    let (position, _) = syntax("$.é[0]x");
    assert_eq!(position, 7, "positions count characters");
    let e = JsonPath::compile("$.a b").unwrap_err();
    assert_eq!(
        e.to_string(),
        "expression $.a b is not valid JSONPath: unexpected 'b' after a space; a path cannot \
         contain spaces outside quoted names like ['a b'] (at character 5)"
    );
    let (_, message) = syntax("[?(@.a @ 1)]");
    assert!(message.contains("operator"), "{message}");
    let (_, message) = syntax("[?(x)]");
    assert!(message.contains("expected @"), "{message}");
}

#[test]
fn accepted_oddities() {
    // a dot followed by a space ends the path (no member required)
    assert_eq!(all("$.a. ", r#"{"a":1}"#), s(&["1"]));
    // leading spaces before a name are part of it unless '$' starts the path
    assert_eq!(all(" a", r#"{" a":1,"a":2}"#), s(&["1"]));
    // the character after ',' in a name list is skipped as if it were a quote
    assert_eq!(all("['a',xb']", r#"{"a":1,"b":2}"#), s(&["1", "2"]));
    // ',' then ':' mixes into an index list
    assert_eq!(all("[1,2:3]", "[0,1,2,3]"), s(&["1", "3"]));
    // spaces around filter parts
    assert_eq!(count("$[ ?( @.a == 1 ) ]", r#"[{"a":1}]"#), 1);
    // `&&||` adds the comparison to both groups
    assert_eq!(
        count("$[?(@.a&&||@.b)]", r#"[{"a":1},{"b":1},{"a":1,"b":1}]"#),
        2
    );
}

#[test]
fn nesting_and_size_are_bounded() {
    let mut deep = String::from("$");
    for _ in 0..(MAX_DEPTH + 5) {
        deep.push_str("[?(@");
    }
    deep.push_str(".a");
    for _ in 0..(MAX_DEPTH + 5) {
        deep.push_str(")]");
    }
    let (_, message) = syntax(&deep);
    assert!(message.contains("nest"), "{message}");

    let mut ok = String::from("$");
    for _ in 0..100 {
        ok.push_str("[?(@");
    }
    ok.push_str(".a");
    for _ in 0..100 {
        ok.push_str(")]");
    }
    let p = compile(&ok);
    let d = doc(r#"[[[{"a":1}]]]"#);
    let _ = p.try_select_all(&d);

    let alternating = format!("$[?({} @.z)]", "@.a && @.b || ".repeat(MAX_DEPTH));
    let (_, message) = syntax(&alternating);
    assert!(message.contains("nest"), "{message}");
    let same_operator = format!("$[?({} @.z)]", "@.a && ".repeat(1000));
    compile(&same_operator);

    let long = format!("${}", ".a".repeat(MAX_STEPS + 1));
    let (_, message) = syntax(&long);
    assert!(message.contains("steps"), "{message}");
    let wide = format!("${}", ".*".repeat(MAX_STEPS));
    let p = compile(&wide);
    let _ = p.try_select_all(&doc(r#"{"a":{"a":{"a":1}}}"#));
}

#[test]
fn deep_documents_do_not_overflow_the_stack() {
    // sonic-rs parses and drops recursively (about 35 KB of stack per level in debug builds), so
    // the document is built and dropped on a big stack; evaluation runs on a small one.
    let depth = 2000;
    let json = format!(
        "{}{}{}",
        r#"{"a":["#.repeat(depth),
        r#"{"x":1}"#,
        "]}".repeat(depth)
    );
    let big = || std::thread::Builder::new().stack_size(512 << 20);
    let d = big()
        .spawn(move || doc(&json))
        .expect("thread")
        .join()
        .expect("parse");
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn_scoped(scope, || {
                assert_eq!(compile("$..x").try_select_all(&d).unwrap().len(), 1);
                assert_eq!(compile("$..[?(@.x)]").try_select_all(&d).unwrap().len(), 1);
                assert_eq!(
                    compile("$..*").try_select_all(&d).unwrap().len(),
                    2 * depth + 2
                );
                assert!(matches!(
                    compile("$..[?(@..x)]").select_nodes(Scope::Token(&d)),
                    Err(JsonPathError::PropertyToken { .. })
                ));
                let leaf = doc("1");
                let overlay = Scope::WithMatch {
                    root: &d,
                    matched: &leaf,
                };
                assert_eq!(compile("$..x").select_nodes(overlay).unwrap().len(), 1);
            })
            .expect("thread")
            .join()
            .expect("evaluation on a small stack");
    });
    big()
        .spawn(move || drop(d))
        .expect("thread")
        .join()
        .expect("drop");
}

#[test]
fn walks_keep_pre_order_past_the_recursion_budget() {
    // {"a":[{"a":[ … ],"b":1}],"b":0}: pre-order visits "a" subtrees before "b", so `$..b`
    // yields the deepest level first; 150 levels cross the recursive/heap-stack boundary.
    let depth = 150;
    let mut json = String::from("{\"x\":true}");
    for level in (0..depth).rev() {
        json = format!("{{\"a\":[{json}],\"b\":{level}}}");
    }
    let big = || std::thread::Builder::new().stack_size(512 << 20);
    let d = big()
        .spawn(move || doc(&json))
        .expect("thread")
        .join()
        .expect("parse");
    let deepest_first: Vec<String> = (0..depth).rev().map(|l| l.to_string()).collect();
    let got: Vec<String> = compile("$..b")
        .try_select_all(&d)
        .unwrap()
        .into_iter()
        .map(text)
        .collect();
    assert_eq!(got, deepest_first);
    // a scan filter tests each object before its descendants: shallowest first
    let got: Vec<String> = compile("$..[?(@.b >= 0)].b")
        .try_select_all(&d)
        .unwrap()
        .into_iter()
        .map(text)
        .collect();
    let shallowest_first: Vec<String> = (0..depth).map(|l| l.to_string()).collect();
    assert_eq!(got, shallowest_first);
    assert_eq!(compile("$..x").try_select_all(&d).unwrap().len(), 1);
    let matched = doc("[]");
    let overlay = Scope::WithMatch {
        root: &d,
        matched: &matched,
    };
    assert_eq!(compile("$..b").select_nodes(overlay).unwrap().len(), depth);
    big()
        .spawn(move || drop(d))
        .expect("thread")
        .join()
        .expect("drop");
}

// ---------------------------------------------------------------------------------------------
// robustness: generated expressions

/// A deterministic generator (no proptest dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn pick<'x>(&mut self, items: &[&'x str]) -> &'x str {
        items[(self.next() as usize) % items.len()]
    }
}

const FRAGMENTS: &[&str] = &[
    "$",
    "@",
    ".",
    "..",
    "[",
    "]",
    "(",
    ")",
    "?",
    "'",
    "\"",
    "*",
    ":",
    ",",
    "-",
    "0",
    "1",
    "-1",
    "a",
    "b",
    "x",
    "matchedToken",
    " ",
    "==",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "=~",
    "===",
    "!==",
    "<>",
    "&&",
    "||",
    "&",
    "|",
    "!",
    "=",
    "/",
    "\\",
    "true",
    "false",
    "null",
    "é",
    "💡",
    "\t",
    "2.5",
    "1e3",
    "[?(",
    ")]",
    "['a']",
    "[0]",
    "[*]",
    "[1:]",
    "[::-1]",
    "@.a",
    "@a",
    "'s'",
    "/a/i",
    "/(/",
    "..*",
    "..[?(@.a)]",
    "[?(@ > 1)]",
    "[-1]",
    "[0,1]",
    "['a','b']",
    "$.a",
    "'\\u'",
];

const DOCS: &[&str] = &[
    r#"{"a":{"a":[1,2,{"a":"x","b":null}],"b":"s"},"b":[true,false,0,"",[],{}],"x":2.5,"matchedToken":{"a":1}}"#,
    r#"[1,"a",null,{"a":[{"b":2}]},[[-1]],{"x":"1"}]"#,
    r#""just a string""#,
    r#"{"a":"/a/i","b":["A","ab",1],"x":{"x":{"x":{}}}}"#,
];

fn check_invariants(path: &JsonPath) {
    for json in DOCS {
        let d = doc(json);
        let nodes = path.select_nodes(Scope::Token(&d));
        let all = path.try_select_all(&d);
        match (&nodes, &all) {
            (Ok(n), Ok(a)) => assert_eq!(n.len(), a.len(), "{}", path.text()),
            (Err(x), Err(y)) => assert_eq!(x, y, "{}", path.text()),
            _ => panic!("{}: {nodes:?} vs {all:?}", path.text()),
        }
        let one = path.select_one(Scope::Token(&d));
        if let Ok(n) = &nodes {
            match (n.len(), &one) {
                (0, Ok(None)) | (1, Ok(Some(_))) => {}
                (k, Err(JsonPathError::MultipleTokens { .. })) if k > 1 => {}
                (_, Err(JsonPathError::PropertyToken { .. })) => {}
                _ => panic!("{}: {} nodes but select_one {one:?}", path.text(), n.len()),
            }
        }
        let matched = doc(r#"{"a":[1,{"a":2}],"m":"x"}"#);
        let (overlay, plain) = overlay_and_materialized(path, &d, &matched);
        assert_eq!(overlay, plain, "{} on {json}", path.text());
        let _ = path.select_one(Scope::WithMatch {
            root: &d,
            matched: &matched,
        });
    }
}

#[test]
fn generated_expressions_never_panic_and_keep_invariants() {
    let mut rng = Lcg(0x1234_5678_9abc_def0);
    let mut compiled = 0;
    for round in 0..6000 {
        let n = 1 + (rng.next() as usize) % 10;
        let mut expr = String::new();
        if round % 3 == 0 {
            expr.push('$');
        }
        for _ in 0..n {
            expr.push_str(rng.pick(FRAGMENTS));
        }
        if let Ok(path) = JsonPath::compile(&expr) {
            compiled += 1;
            check_invariants(&path);
        }
    }
    assert!(
        compiled > 500,
        "only {compiled} generated expressions compiled"
    );
}

#[test]
fn truncations_and_insertions_never_panic() {
    let seeds = [
        "$..[?(@Body.systolic && @Body.diastolic)]",
        "$.store.book[?(@.title =~ /^.*Sword.*$/i)].author",
        "$['a','b'][0,1][1:2:-1]..['x']",
        "$.a[?(@.b[?(@.c == 'x\\'y')] || $.d > -1.5e3)]",
        "$..*[?(@ != null)]",
        "$.matchedToken.é💡[?(@ === true)]",
    ];
    let inserts = [
        "[", "]", "(", ")", "'", "\\", ".", "?", "@", "$", " ", "é", "/", "&", "|", "=", ":", ",",
        "*",
    ];
    for seed in seeds {
        let chars: Vec<(usize, char)> = seed.char_indices().collect();
        for &(i, _) in &chars {
            let prefix = &seed[..i];
            if let Ok(p) = JsonPath::compile(prefix) {
                check_invariants(&p);
            }
            for ins in inserts {
                let mutated = format!("{}{}{}", &seed[..i], ins, &seed[i..]);
                if let Ok(p) = JsonPath::compile(&mutated) {
                    check_invariants(&p);
                }
                let removed = format!(
                    "{}{}",
                    &seed[..i],
                    &seed[i..].chars().skip(1).collect::<String>()
                );
                if let Ok(p) = JsonPath::compile(&removed) {
                    check_invariants(&p);
                }
            }
        }
    }
}

#[test]
fn tricky_inputs_never_panic() {
    let tricky = [
        "",
        " ",
        "$",
        "$$",
        "$.",
        "..",
        "...",
        "[",
        "]",
        "[[",
        "]]",
        "[?",
        "[?(",
        "[?()]",
        "@",
        "@.",
        "$[",
        "$['",
        "$['\\",
        "$['\\'",
        "$['\\\\']",
        "$[?(@.a=='\\",
        "$[?(@=~/",
        "$[?(@=~/\\",
        "$[?(@=~/\\/",
        "$[?(@=~/a/é)]",
        "$[?(@=~/a/💡)]",
        "$[?(/a/)]",
        "$[?(-)]",
        "$[?(-a)]",
        "$[?(1e99999)]",
        "$[?(@ == 1e99999)]",
        "$[?(@ < -1e99999)]",
        "$[:::]",
        "$[::-]",
        "$[-2147483648]",
        "$[-2147483649]",
        "$[1:2:3:4]",
        "$[ 1 : 2 ]",
        "$[ , ]",
        "$['a',]",
        "$['a',",
        "$..['a'",
        "$.💡",
        "$['💡']",
        "$[💡]",
        "💡",
        "é[0]",
        "$.a\u{0}",
        "\u{0}",
        "$[?(@.a\u{0})]",
        "$[?(@ == '\u{0}')]",
        "$(",
        "$()",
        "$(0)",
        "$(*)",
        "$('a')",
        "$(?(@))",
        "$.a(?(@.b))",
        "[?(@)][?(@)][?(@)]",
        "$..[?(@..[?(@..[?(@)])])]",
        "$[?($)]",
        "$[?($..*)]",
        "$[?(@.a === @.b !== @.c)]",
        "$[?(@ <> @)]",
        "$[?(true&&false||null)]",
        "$[?(@.x =~ $.r)]",
        "$[?('a' =~ @)]",
        "$[?(@ > true)]",
        "$[?(@ < 'True ')]",
    ];
    for t in tricky {
        if let Ok(p) = JsonPath::compile(t) {
            check_invariants(&p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// timing (run with: cargo test --release -p iomt-expr jsonpath::tests::timing -- --ignored --nocapture)

const MESSAGE_300: &str = r#"{"Body":{"heartRate":78,"systolic":120,"diastolic":80,"steps":1234,"endDate":"2024-01-01T12:34:56.789Z","deviceId":"device-0001"},"Properties":{"iothub-creation-time-utc":"2024-01-01T12:34:56.789Z"},"SystemProperties":{"iothub-connection-device-id":"ev-d795-1d04-55ae","iothub-enqueuedtime":"2024-01-01T12:34:57Z"}}"#;

#[test]
#[ignore = "timing, run in release"]
fn timing() {
    use std::hint::black_box;
    use std::time::Instant;
    let d = doc(MESSAGE_300);
    println!("message: {} bytes", MESSAGE_300.len());
    let measure = |name: &str, f: &dyn Fn() -> usize| {
        let n = 2_000_000;
        for _ in 0..10_000 {
            black_box(f());
        }
        let start = Instant::now();
        let mut sum = 0;
        for _ in 0..n {
            sum += black_box(f());
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{name:<55} {ns:8.1} ns/op ({sum})");
    };
    measure("baseline: raw sonic-rs d.get(Body).get(heartRate)", &|| {
        let v = sonic_rs::JsonValueTrait::get(black_box(&d), "Body")
            .and_then(|b| sonic_rs::JsonValueTrait::get(b, "heartRate"));
        usize::from(v.is_some())
    });
    let ab = compile("$.Body.heartRate");
    measure("select_one $.Body.heartRate", &|| {
        usize::from(
            ab.select_one(Scope::Token(black_box(&d)))
                .unwrap()
                .is_some(),
        )
    });
    let long = compile("$.SystemProperties.iothub-connection-device-id");
    measure(
        "select_one $.SystemProperties.iothub-connection-device-id",
        &|| {
            usize::from(
                long.select_one(Scope::Token(black_box(&d)))
                    .unwrap()
                    .is_some(),
            )
        },
    );
    let body = sonic_rs::JsonValueTrait::get(&d, "Body").expect("Body");
    let mt = compile("$.matchedToken.heartRate");
    measure("select_one $.matchedToken.heartRate (WithMatch)", &|| {
        let scope = Scope::WithMatch {
            root: black_box(&d),
            matched: body,
        };
        usize::from(mt.select_one(scope).unwrap().is_some())
    });
    fn raw_walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        use sonic_rs::JsonContainerTrait;
        if let Some(o) = v.as_object() {
            if o.get(&"heartRate").is_some() {
                out.push(v);
            }
            for (_, x) in o.iter() {
                raw_walk(x, out);
            }
        } else if let Some(a) = v.as_array() {
            for x in a.iter() {
                raw_walk(x, out);
            }
        }
    }
    measure(
        "baseline: hand-written sonic-rs walk testing heartRate",
        &|| {
            let mut out = Vec::new();
            raw_walk(black_box(&d), &mut out);
            out.len()
        },
    );
    let scan = compile("$..[?(@heartRate)]");
    measure("select_all $..[?(@heartRate)]", &|| {
        scan.select_all(black_box(&d)).len()
    });
    let scan2 = compile("$..[?(@Body.systolic && @Body.diastolic)]");
    measure(
        "select_all $..[?(@Body.systolic && @Body.diastolic)]",
        &|| scan2.select_all(black_box(&d)).len(),
    );
    let cmp = compile("$..[?(@.heartRate > 70)]");
    measure("select_all $..[?(@.heartRate > 70)]", &|| {
        cmp.select_all(black_box(&d)).len()
    });
    measure("compile $..[?(@heartRate)]", &|| {
        JsonPath::compile(black_box("$..[?(@heartRate)]")).map_or(0, |p| p.steps.len())
    });
}

#[test]
fn compiled_paths_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<JsonPath>();
    assert_send_sync::<JsonPathError>();
    let p = compile("$..[?(@.a =~ /x/i)]");
    assert_eq!(p.clone().text(), "$..[?(@.a =~ /x/i)]");
}

/// The direct scan of `$..[?(@a && @b.c)]` gives exactly the generic evaluator's results.
#[test]
fn exists_scan_matches_the_generic_evaluator() {
    let docs = [
        r#"{"heartRate":1,"a":[{"heartRate":null},{"x":{"heartRate":false}},[{"heartRate":0}]],"b":{"c":{"heartRate":""}}}"#,
        r#"{"Body":{"systolic":1,"diastolic":2},"Properties":{},"SystemProperties":{"Body":{"systolic":3}}}"#,
        r#"[{"a":{"b":1}},{"a":{"c":1}},{"a":[{"b":1}]},{"a":null},{"a":{"b":null},"c":1}]"#,
        r#"{"matchedToken":{"heartRate":1},"heartRate":2,"x":[[[{"heartRate":3}]]]}"#,
        r#"1"#,
        r#"{"dup":1,"dup":2,"k":{"dup":3}}"#,
    ];
    let exprs = [
        "$..[?(@heartRate)]",
        "..[?(@heartRate)]",
        "$..[?(@Body.systolic && @Body.diastolic)]",
        "$..[?(@a.b)]",
        "$..[?(@a.b && @c)]",
        "$..[?(@dup)]",
        "$..[?(@.heartRate)]",
        "$..[?(@['heartRate'])]",
    ];
    for text in exprs {
        let fast = JsonPath::compile(text).unwrap();
        assert!(
            fast.exists_scan.is_some(),
            "{text} should use the direct scan"
        );
        let mut generic = fast.clone();
        generic.exists_scan = None;
        for doc in docs {
            let v: Value = sonic_rs::from_str(doc).unwrap();
            let a = fast.try_select_all(&v).unwrap();
            let b = generic.try_select_all(&v).unwrap();
            let ptrs = |x: &[&Value]| x.iter().map(|v| *v as *const Value).collect::<Vec<_>>();
            assert_eq!(ptrs(&a), ptrs(&b), "{text} on {doc}");
        }
    }
    for text in [
        "$..[?(@a || @b)]",
        "$..[?(@a == 1)]",
        "$.x..[?(@a)]",
        "$..[?($.a)]",
        "$..[?(@a[0])]",
    ] {
        assert!(
            JsonPath::compile(text).unwrap().exists_scan.is_none(),
            "{text} is not the simple shape"
        );
    }
}

#[test]
fn exists_scan_uses_the_first_of_duplicate_members() {
    let doc: Value = sonic_rs::from_str(r#"{"a":1,"a":{"b":1}}"#).unwrap();
    let fast = JsonPath::compile("$..[?(@a.b)]").unwrap();
    let mut generic = fast.clone();
    generic.exists_scan = None;
    assert_eq!(
        fast.try_select_all(&doc).unwrap().len(),
        generic.try_select_all(&doc).unwrap().len()
    );
}

/// A small deterministic generator for the batch test (no dev-dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// JSON text for a random value: objects draw member names from a few (so duplicates and
/// `matchedToken` members are common), values of every kind.
fn random_json(rng: &mut Rng, depth: usize) -> String {
    const NAMES: [&str; 5] = ["a", "b", "matchedToken", "a b", "c"];
    match rng.below(if depth == 0 { 4 } else { 7 }) {
        0 => "null".into(),
        1 => format!("{}", rng.below(100)),
        2 => "\"s\"".into(),
        3 => "false".into(),
        4 => {
            let items: Vec<_> = (0..rng.below(3))
                .map(|_| random_json(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let members: Vec<_> = (0..rng.below(6))
                .map(|_| {
                    format!(
                        "{:?}:{}",
                        NAMES[rng.below(NAMES.len())],
                        random_json(rng, depth - 1)
                    )
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
    }
}

#[test]
fn member_batch_matches_select_one() {
    let mut paths = Vec::new();
    for a in ["a", "b", "matchedToken", "['a b']", "c"] {
        paths.push(format!("$.{a}"));
        for b in ["a", "matchedToken", "['a b']"] {
            paths.push(format!("$.{a}.{b}"));
            paths.push(format!("{a}.{b}.a"));
        }
    }
    paths.push("$['a']['b']".into());
    paths.push("$.a.a.a.a".into());
    let compiled: Vec<JsonPath> = paths.iter().map(|p| compile(p)).collect();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for round in 0..3000 {
        let d = doc(&random_json(&mut rng, 4));
        let matched = doc(&random_json(&mut rng, 3));
        // A match inside the document when there is one, as type matching gives.
        let inner = compile("$..*").select_all(&d);
        let matched = match inner.len() {
            0 => &matched,
            n => inner[rng.below(n)],
        };
        // A different subset and order of the paths each round.
        let mut batch = MemberBatch::new();
        let mut slots = Vec::new();
        for (i, path) in compiled.iter().enumerate() {
            if rng.below(3) > 0 && batch.len() < MAX_BATCH_PATHS {
                slots.push((i, batch.add(path).expect("member chain")));
            }
        }
        for scope in [Scope::Token(&d), Scope::WithMatch { root: &d, matched }] {
            let mut found = [None; MAX_BATCH_PATHS];
            batch.resolve(scope, &mut found);
            for &(i, slot) in &slots {
                let expected = match compiled[i].select_one(scope).unwrap() {
                    Some(Node::Value(v)) => Some(v as *const Value),
                    Some(Node::ScopeRoot) => panic!("a member path selected the root"),
                    None => None,
                };
                assert_eq!(
                    found[slot].map(|v| v as *const Value),
                    expected,
                    "round {round}: {} in {} ({scope:?})",
                    paths[i],
                    text(&d)
                );
            }
        }
    }
}

#[test]
fn member_batch_takes_only_member_chains() {
    let mut batch = MemberBatch::new();
    for path in [
        "$",
        "$.a[0]",
        "$..a",
        "$.*",
        "$['a','b']",
        "$.a[?(@.b)]",
        "a[*]",
    ] {
        assert_eq!(batch.add(&compile(path)), None, "{path}");
    }
    assert!(batch.is_empty());
    for i in 0..MAX_BATCH_PATHS {
        assert_eq!(batch.add(&compile(&format!("$.m{i}"))), Some(i));
    }
    assert_eq!(batch.add(&compile("$.a")), None, "the batch is full");
    assert_eq!(batch.len(), MAX_BATCH_PATHS);
}

#[test]
fn capturing_scan_matches_the_generic_evaluator() {
    use sonic_rs::JsonContainerTrait;
    let exprs = [
        "$..[?(@a)]",
        "$..[?(@b)]",
        "$..[?(@a.b)]",
        "$..[?(@a && @b)]",
        "$..[?(@matchedToken.a && @c)]",
        "$..[?(@['a b'])]",
    ];
    let name_sets: [&[&str]; 5] = [
        &[],
        &["a"],
        &["b", "a", "c"],
        &["matchedToken", "a b", "zz", "a", "b", "c", "d", "e"],
        &["c"],
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut docs: Vec<String> = [
        r#"{"a":1,"a":{"b":1},"b":[{"a":null,"b":2},{"a":{"b":3}}]}"#,
        r#"{"Body":{"a":1},"Properties":{},"SystemProperties":{"a":{"a":2}}}"#,
        r#"[[{"a":1}],{"c":{"a":2,"c":3}}]"#,
        "1",
    ]
    .map(str::to_owned)
    .into();
    docs.extend((0..1500).map(|_| random_json(&mut rng, 5)));
    let mut several = 0;
    for text in exprs {
        let fast = compile(text);
        let mut generic = fast.clone();
        generic.exists_scan = None;
        for names in name_sets {
            let names: Vec<Box<str>> = names.iter().map(|&n| n.into()).collect();
            for json in &docs {
                let d = doc(json);
                let expected = generic.try_select_all(&d).unwrap();
                let got = fast
                    .select_all_capturing(&d, &names, |m, c| (m, *c))
                    .expect("the direct scan");
                assert_eq!(got.len(), expected.len());
                several += usize::from(expected.len() > 1);
                assert_eq!(
                    got.iter()
                        .map(|(m, _)| *m as *const Value)
                        .collect::<Vec<_>>(),
                    expected
                        .iter()
                        .map(|m| *m as *const Value)
                        .collect::<Vec<_>>(),
                    "{text} on {json}"
                );
                for (m, captured) in got.iter() {
                    let object = m.as_object().expect("matches are objects");
                    for (i, name) in names.iter().enumerate() {
                        assert_eq!(
                            captured[i].map(|v| v as *const Value),
                            object.get(name).map(|v| v as *const Value),
                            "{text} capturing {name} on {json}"
                        );
                    }
                    assert!(captured[names.len()..].iter().all(Option::is_none));
                }
            }
        }
    }
    assert!(
        several > 500,
        "only {several} documents with nested matches"
    );
    // Other shapes and too many names: no direct scan.
    let names: Vec<Box<str>> = (0..=MAX_CAPTURE).map(|i| format!("n{i}").into()).collect();
    let d = doc(r#"{"a":1}"#);
    assert!(
        compile("$..[?(@a)]")
            .select_all_capturing(&d, &names, |m, _| m)
            .is_none()
    );
    assert!(
        compile("$.a")
            .select_all_capturing(&d, &[], |m, _| m)
            .is_none()
    );
}

#[test]
fn member_batch_resolves_captured_members_like_lookups() {
    let paths = [
        "$.matchedToken.a",
        "$.matchedToken.b",
        "$.matchedToken",
        "$.matchedToken.a.b",
        "$.matchedToken.matchedToken.c",
        "$.a",
        "$.b.a",
        "$.c",
        "$['a b']",
    ];
    let type_matches = ["$..[?(@a)]", "$..[?(@b)]", "$..[?(@c && @a)]"];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut compared = 0;
    for round in 0..1500 {
        let d = doc(&random_json(&mut rng, 5));
        let mut batch = MemberBatch::new();
        for path in &paths {
            if rng.below(2) == 0 {
                batch.add(&compile(path)).expect("member chain");
            }
        }
        let type_match = compile(type_matches[rng.below(type_matches.len())]);
        for with_match in [false, true] {
            let Some(names) = batch.match_names(with_match) else {
                continue;
            };
            let matches = type_match
                .select_all_capturing(&d, names, |m, c| (m, *c))
                .expect("the direct scan");
            for (m, captured) in matches.iter() {
                let scope = if with_match {
                    Scope::WithMatch {
                        root: &d,
                        matched: m,
                    }
                } else {
                    Scope::Token(m)
                };
                let (mut a, mut b) = ([None; MAX_BATCH_PATHS], [None; MAX_BATCH_PATHS]);
                batch.resolve(scope, &mut a);
                batch.resolve_captured(scope, captured, &mut b);
                let ptrs = |x: &[Option<&Value>]| {
                    x.iter()
                        .map(|v| v.map(|v| v as *const Value))
                        .collect::<Vec<_>>()
                };
                assert_eq!(ptrs(&a), ptrs(&b), "round {round} on {}", text(&d));
                compared += 1;
            }
        }
    }
    assert!(compared > 500, "only {compared} matches compared");
}

/// Repeated recursive descents multiply the work; the step budget turns that into an error
/// instead of a stalled pipeline (found by fuzzing: fuzz/regressions/jsonpath-*).
#[test]
fn combinatorial_scans_hit_the_step_budget() {
    let doc: Value = sonic_rs::from_str(
        r#"{"a":[{"b":[1,2,3,{"c":[4,5,6]}]},{"b":[7,8,9,{"c":[1,2,3]}]}],"d":{"e":{"f":{"g":[1,2,3,4,5,6,7,8,9]}}}}"#,
    )
    .unwrap();
    let path = JsonPath::compile(&"..*".repeat(60)).unwrap();
    let err = path.try_select_all(&doc).unwrap_err();
    assert!(matches!(err, JsonPathError::TooMuchWork { .. }), "{err}");
    assert!(matches!(
        path.select_one(Scope::Token(&doc)),
        Err(JsonPathError::TooMuchWork { .. }) | Err(JsonPathError::MultipleTokens { .. })
    ));
    // The budget is per evaluation: an ordinary path right after works.
    let ok = JsonPath::compile("$.d.e.f.g[2]").unwrap();
    assert_eq!(ok.try_select_all(&doc).unwrap().len(), 1);
}
