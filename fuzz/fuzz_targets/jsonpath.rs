//! Compiles arbitrary text as JSONPath and, when it compiles, evaluates it on a fixed message in
//! every way normalization does. Nothing may panic.
#![no_main]

use iomt_expr::jsonpath::JsonPath;
use iomt_expr::{Scope, Value};
use libfuzzer_sys::fuzz_target;

const DOC: &str = r#"{"Body":{"heartRate":78,"a":[1,2.5,"x",null,true,{"b":[{"c":0}]}],"o":{"k-1":"v","":""}},"Properties":{"iothub-creation-time-utc":"2026-01-01T00:00:00Z"},"SystemProperties":{},"matchedToken":{"x":1}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(path) = JsonPath::compile(text) else { return };
    let doc: Value = sonic_rs::from_str(DOC).unwrap();
    let matches = path.select_all(&doc);
    let _ = path.select_one(Scope::Token(&doc));
    for m in matches.iter().take(8) {
        let _ = path.select_one(Scope::WithMatch { root: &doc, matched: m });
    }
});
