//! Loads arbitrary text as a device mapping and, when it loads, normalizes a few messages with
//! it. Nothing may panic; loading reports errors as values.
#![no_main]

use iomt_normalize::{DeviceMapping, EnvelopeBuilder};
use libfuzzer_sys::fuzz_target;

const MESSAGES: &[&[u8]] = &[
    br#"{"heartRate":78,"deviceId":"d","endDate":"2026-01-01T00:00:00Z","patientId":"p"}"#,
    br#"{"readings":[{"hr":1,"d":"x","t":"2026-01-01T00:00:00+01:00"},{"hr":null}]}"#,
    b"[1,2,3]",
    b"",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (mapping, _errors) = DeviceMapping::load_lenient(text);
    let mut builder = EnvelopeBuilder::new();
    for message in MESSAGES {
        if let Ok(token) = builder.build(message, &[], &[]) {
            let _ = mapping.normalize(&token);
        }
    }
});
