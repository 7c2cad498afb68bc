//! Compiles arbitrary text as JMESPath (with the custom functions) and, when it compiles,
//! evaluates it on a fixed message in every way normalization does. Nothing may panic.
#![no_main]

use iomt_expr::jmespath::JmesPath;
use iomt_expr::{Scope, Value};
use libfuzzer_sys::fuzz_target;

const DOC: &str = r#"{"Body":{"heartRate":78,"a":[1,2.5,"x",null,true,{"b":[{"c":0}]}],"ts":1767225600,"s":"abc"},"Properties":{},"SystemProperties":{},"n":[9223372036854775807,-9223372036854775808,0,1e308]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(expr) = JmesPath::compile(text) else { return };
    let doc: Value = sonic_rs::from_str(DOC).unwrap();
    if let Ok(matches) = expr.select_matches(&doc) {
        for m in matches.iter().take(8) {
            let _ = expr.select_one(Scope::WithMatch { root: &doc, matched: m.value() });
        }
    }
    let _ = expr.select_one(Scope::Token(&doc));
});
