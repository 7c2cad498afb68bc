//! Replays the saved fuzzing corpora (`fuzz/corpus/*`) through the same calls the fuzz targets
//! make, so every input that once found new behaviour keeps being checked on every test run,
//! without a fuzzer. A panic here is a regression.

use std::fs;
use std::path::{Path, PathBuf};

use iomt_expr::jmespath::JmesPath;
use iomt_expr::jsonpath::JsonPath;
use iomt_expr::{Scope, Value};
use iomt_normalize::{DeviceMapping, EnvelopeBuilder};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

const DOC: &str = r#"{"Body":{"heartRate":78,"a":[1,2.5,"x",null,true,{"b":[{"c":0}]}],"o":{"k-1":"v","":""},"ts":1767225600,"s":"abc"},"Properties":{"iothub-creation-time-utc":"2026-01-01T00:00:00Z"},"SystemProperties":{},"matchedToken":{"x":1},"n":[9223372036854775807,-9223372036854775808,0,1e308]}"#;

#[test]
fn jsonpath_corpus_never_panics() {
    let doc: Value = sonic_rs::from_str(DOC).unwrap();
    for file in corpus("jsonpath") {
        let Ok(text) = String::from_utf8(fs::read(&file).unwrap()) else {
            continue;
        };
        let Ok(path) = JsonPath::compile(&text) else {
            continue;
        };
        let matches = path.select_all(&doc);
        let _ = path.select_one(Scope::Token(&doc));
        for m in matches.iter().take(8) {
            let _ = path.select_one(Scope::WithMatch {
                root: &doc,
                matched: m,
            });
        }
    }
}

#[test]
fn jmespath_corpus_never_panics() {
    let doc: Value = sonic_rs::from_str(DOC).unwrap();
    for file in corpus("jmespath") {
        let Ok(text) = String::from_utf8(fs::read(&file).unwrap()) else {
            continue;
        };
        let Ok(expr) = JmesPath::compile(&text) else {
            continue;
        };
        if let Ok(matches) = expr.select_matches(&doc) {
            for m in matches.iter().take(8) {
                let _ = expr.select_one(Scope::WithMatch {
                    root: &doc,
                    matched: m.value(),
                });
            }
        }
        let _ = expr.select_one(Scope::Token(&doc));
    }
}

#[test]
fn device_mapping_corpus_never_panics() {
    let messages: [&[u8]; 4] = [
        br#"{"heartRate":78,"deviceId":"d","endDate":"2026-01-01T00:00:00Z","patientId":"p"}"#,
        br#"{"readings":[{"hr":1,"d":"x","t":"2026-01-01T00:00:00+01:00"},{"hr":null}]}"#,
        b"[1,2,3]",
        b"",
    ];
    let mut builder = EnvelopeBuilder::new();
    for file in corpus("device_mapping") {
        let Ok(text) = String::from_utf8(fs::read(&file).unwrap()) else {
            continue;
        };
        let (mapping, _errors) = DeviceMapping::load_lenient(&text);
        for message in messages {
            if let Ok(token) = builder.build(message, &[], &[]) {
                let _ = mapping.normalize(&token);
            }
        }
    }
}
