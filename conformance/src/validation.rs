//! `transcribed/validation/*`: the original's mapping validator (SPEC §14), run through
//! `iomt_debugger::validate` and `iomt_debugger::test_mapping`.
//!
//! # How a case maps onto the debugger
//! * `device-template.ref.json` / `fhir-template.ref.json` name the mappings; a case without one
//!   uses those of `hr-bp-valid`, as the original's test did (its `FileData` attributes name the
//!   same two files, see `CASES.md` B43/B44).
//! * `input.json` holds one token or a list; each is handed to the templates as it is (the
//!   validator received bare tokens, not event envelopes), so the messages are
//!   [`iomt_debugger::MessageKind::Envelope`].
//! * `templateErrors` / `templateWarnings` are compared with [`iomt_debugger::validate`].
//! * Without aggregation, every `deviceResults[i]` is the debugger run on message `i` alone:
//!   the validator processed each event separately (one Observation per measurement), whereas a
//!   test run groups all its messages as one batch; the per-message run is the same thing for
//!   one message.
//! * With aggregation, all messages run together and `deviceResults` are compared with the
//!   report's aggregated issues, in order.
//! * Categories: `NORMALIZATION` is the device side (device mapping errors, message errors and
//!   warnings), `FHIRTRANSFORMATION` the FHIR side (FHIR mapping errors, cross checks, group
//!   errors).

use std::path::{Path, PathBuf};

use iomt_debugger::{
    IdentityMode, Level, MappingKind, Message, Stage, TestOptions, TestReport, WarningKind,
};
use serde_json::Value;

use crate::{check_error, read_json, read_text, resolve_ref, same_json};

const NORMALIZATION: &str = "NORMALIZATION";
const FHIR: &str = "FHIRTRANSFORMATION";

fn mapping_file(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let own = dir.join(name);
    let path = if own.exists() {
        own
    } else {
        dir.parent()
            .ok_or("case folder has no parent")?
            .join("hr-bp-valid")
            .join(name)
    };
    resolve_ref(&path)
}

/// One reported issue: its category and text.
struct Issue {
    category: &'static str,
    message: String,
}

fn check_issues(what: &str, got: &[Issue], want: Option<&Value>) -> Result<(), String> {
    let Some(want) = want else { return Ok(()) };
    let want = want.as_array().ok_or(format!("{what} is not a list"))?;
    if got.len() != want.len() {
        let texts: Vec<&str> = got.iter().map(|i| i.message.as_str()).collect();
        return Err(format!(
            "{} {what}, expected {}: {texts:#?}",
            got.len(),
            want.len()
        ));
    }
    for (g, w) in got.iter().zip(want) {
        if let Some(category) = w.get("category").and_then(Value::as_str)
            && category != g.category
        {
            return Err(format!(
                "{what}: category {}, expected {category}: {}",
                g.category, g.message
            ));
        }
        check_error(w, "", &g.message).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

fn options(aggregate: bool) -> TestOptions {
    let issued = iomt_model::timestamp::parse("2000-01-01T00:00:00Z").unwrap_or_default();
    TestOptions::new(issued)
        .with_identity(IdentityMode::None)
        .with_aggregation(aggregate)
}

/// Runs one validation case folder.
pub fn run_validation(dir: &Path) -> Result<(), String> {
    let device = read_text(&mapping_file(dir, "device-template.ref.json")?)?;
    let fhir = read_text(&mapping_file(dir, "fhir-template.ref.json")?)?;
    let inputs = match read_json(&dir.join("input.json"))? {
        Value::Array(items) => items,
        one => vec![one],
    };
    let messages: Vec<Message> = inputs
        .iter()
        .map(|token| Message::envelope(token.to_string()))
        .collect();
    let expected = match dir.join("expected-validation.json") {
        p if p.exists() => read_json(&p)?,
        _ => Value::Null,
    };

    let validation = iomt_debugger::validate(&device, Some(&fhir));
    let errors: Vec<Issue> = validation
        .errors
        .iter()
        .map(|e| Issue {
            category: match e.mapping {
                MappingKind::Device => NORMALIZATION,
                MappingKind::Fhir => FHIR,
            },
            message: e.message.clone(),
        })
        .collect();
    check_issues("template errors", &errors, expected.get("templateErrors"))?;
    let warnings: Vec<Issue> = validation
        .warnings
        .iter()
        .map(|w| Issue {
            category: match (w.kind, w.mapping) {
                (WarningKind::Template, Some(MappingKind::Device)) => NORMALIZATION,
                _ => FHIR,
            },
            message: w.message.clone(),
        })
        .collect();
    check_issues(
        "template warnings",
        &warnings,
        expected.get("templateWarnings"),
    )?;

    if expected["aggregate"].as_bool() == Some(true) {
        let report = iomt_debugger::test_mapping(&device, &fhir, &messages, &options(true));
        return check_aggregated(&report, &expected["deviceResults"]);
    }

    for (i, message) in messages.iter().enumerate() {
        let report = iomt_debugger::test_mapping(
            &device,
            &fhir,
            std::slice::from_ref(message),
            &options(false),
        );
        let result = &report.messages[0];
        if let Some(want) = expected["deviceResults"].get(i) {
            check_device_result(&report, want).map_err(|e| format!("device result {i}: {e}"))?;
        }
        let expected_measurements = dir.join("expected.json");
        if expected_measurements.exists() {
            let want = read_json(&expected_measurements)?;
            same_json(
                &crate::canonical_measurements(&Value::Array(result.measurements.clone())),
                &crate::canonical_measurements(&want),
            )?;
        }
        let expected_observations = dir.join("expected-observation.json");
        if expected_observations.exists() {
            let want = read_json(&expected_observations)?;
            let mut got: Vec<Value> = report
                .observations
                .iter()
                .map(|o| o.observation.clone())
                .collect();
            for g in &mut got {
                if g.get("issued").is_some() {
                    g["issued"] = Value::String(crate::transform::RUNTIME_NOW.into());
                }
            }
            same_json(&Value::Array(got), &want)?;
        }
    }
    if let Some(results) = expected["deviceResults"].as_array()
        && results.len() != messages.len()
    {
        return Err(format!(
            "{} device results expected for {} messages",
            results.len(),
            messages.len()
        ));
    }
    Ok(())
}

/// Compares a one-message run with one of the validator's device results.
fn check_device_result(report: &TestReport, want: &Value) -> Result<(), String> {
    let result = &report.messages[0];
    if let Some(n) = want.get("measurements").and_then(Value::as_u64)
        && result.measurements.len() as u64 != n
    {
        return Err(format!(
            "{} measurements, expected {n}",
            result.measurements.len()
        ));
    }
    match want.get("observations") {
        Some(Value::Number(n)) if report.observations.len() as u64 != n.as_u64().unwrap_or(0) => {
            return Err(format!(
                "{} observations, expected {n}",
                report.observations.len()
            ));
        }
        Some(Value::Array(facts)) => {
            if report.observations.len() != facts.len() {
                return Err(format!(
                    "{} observations, expected {}",
                    report.observations.len(),
                    facts.len()
                ));
            }
            for (o, facts) in report.observations.iter().zip(facts) {
                check_observation_facts(&o.observation, facts)?;
            }
        }
        _ => {}
    }
    let mut errors: Vec<Issue> = result
        .error
        .iter()
        .map(|e| Issue {
            category: NORMALIZATION,
            message: e.message.clone(),
        })
        .collect();
    errors.extend(report.group_errors.iter().map(|e| Issue {
        category: FHIR,
        message: e.message.clone(),
    }));
    check_issues(
        "errors",
        &errors,
        Some(want.get("errors").unwrap_or(&Value::Array(Vec::new()))),
    )?;
    let warnings: Vec<Issue> = report
        .warnings
        .iter()
        .filter(|w| w.message_index.is_some())
        .map(|w| Issue {
            category: NORMALIZATION,
            message: w.message.clone(),
        })
        .collect();
    check_issues(
        "warnings",
        &warnings,
        Some(want.get("warnings").unwrap_or(&Value::Array(Vec::new()))),
    )?;
    if let Some(n) = want.get("aggregatedCount").and_then(Value::as_u64)
        && n != 0
    {
        return Err(format!("aggregatedCount {n} in a run without aggregation"));
    }
    Ok(())
}

/// `{"code.text": …, "components": [{"code.text": …, "dataContains": …}]}`.
fn check_observation_facts(observation: &Value, facts: &Value) -> Result<(), String> {
    if let Some(text) = facts.get("code.text")
        && &observation["code"]["text"] != text
    {
        return Err(format!("code.text {}", observation["code"]["text"]));
    }
    if let Some(Value::Array(components)) = facts.get("components") {
        let got = observation["component"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if got.len() != components.len() {
            return Err(format!(
                "{} components, expected {}: {got:#?}",
                got.len(),
                components.len()
            ));
        }
        for (c, want) in got.iter().zip(components) {
            if let Some(text) = want.get("code.text")
                && &c["code"]["text"] != text
            {
                return Err(format!("component code.text {}", c["code"]["text"]));
            }
            if let Some(fragment) = want.get("dataContains").and_then(Value::as_str) {
                let data = c["valueSampledData"]["data"].as_str().unwrap_or_default();
                if !data.split(' ').any(|token| token == fragment) {
                    return Err(format!("component data has no {fragment}"));
                }
            }
        }
    }
    Ok(())
}

fn check_aggregated(report: &TestReport, want: &Value) -> Result<(), String> {
    let got = report.aggregated.as_deref().ok_or("no aggregated issues")?;
    let want = want.as_array().ok_or("deviceResults is not a list")?;
    if got.len() != want.len() {
        return Err(format!(
            "{} aggregated issues, expected {}: {got:#?}",
            got.len(),
            want.len()
        ));
    }
    for (g, w) in got.iter().zip(want) {
        if let Some(n) = w.get("aggregatedCount").and_then(Value::as_u64)
            && g.count as u64 != n
        {
            return Err(format!("count {} for {}, expected {n}", g.count, g.message));
        }
        let issue = Issue {
            category: match g.stage {
                Stage::Normalization => NORMALIZATION,
                Stage::FhirTransformation => FHIR,
            },
            message: g.message.clone(),
        };
        let (errors, warnings) = match g.level {
            Level::Error => (vec![issue], Vec::new()),
            Level::Warning => (Vec::new(), vec![issue]),
        };
        let none = Value::Array(Vec::new());
        check_issues("errors", &errors, Some(w.get("errors").unwrap_or(&none)))?;
        check_issues(
            "warnings",
            &warnings,
            Some(w.get("warnings").unwrap_or(&none)),
        )?;
    }
    Ok(())
}
