//! Runs the original connector's transcribed algorithm cases (grouping, de-duplication,
//! SampledData, Quantity values, identity hashes) against this crate.
//!
//! The corpus is read in place from `IOMT_CONFORMANCE_DIR` (default
//! `<CARGO_MANIFEST_DIR>/../../../shared/conformance`); it is never copied into the repository.
//! Each table is one test that runs every case, prints how many passed, and fails listing every
//! failing case. A missing corpus fails when `CI=true` and is reported loudly otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use iomt_model::{Measurement, MeasurementProperty};
use iomt_transform::fhir_template::{FhirValueType, QuantityValueType};
use iomt_transform::group::{PeriodInterval, TimeValue, Window, WindowSpec, group_batch};
use iomt_transform::observation::resource_id;
use iomt_transform::sampled_data::{self, SamplePeriod};
use iomt_transform::{CodeValueFhirTemplate, FhirTemplate, ObservationGroup, Windower};
use serde_json::Value;

fn transcribed() -> Option<PathBuf> {
    let root = std::env::var_os("IOMT_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
        });
    [
        root.join("iomt-fhir/transcribed"),
        root.join("transcribed"),
        root.clone(),
    ]
    .into_iter()
    .find(|p| p.join("algorithms").is_dir())
}

/// Loads a case table, or `None` (after failing in CI) when the corpus is missing.
fn table(relative: &str) -> Option<Value> {
    let Some(dir) = transcribed() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "conformance corpus not found: set IOMT_CONFORMANCE_DIR"
        );
        eprintln!(
            "!!! conformance corpus not found; {relative} NOT RUN (set IOMT_CONFORMANCE_DIR)"
        );
        return None;
    };
    let path = dir.join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn t(s: &str) -> DateTime<Utc> {
    iomt_model::timestamp::parse(s).unwrap_or_else(|| panic!("bad time {s}"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn time_values(v: &Value) -> Vec<(DateTime<Utc>, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|pair| (t(text(&pair[0])), text(&pair[1]).to_owned()))
        .collect()
}

/// Runs every case of a table through `check`, printing the count and failing with all
/// failures.
fn run(name: &str, cases: &[Value], check: impl Fn(&Value) -> Result<(), String>) {
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let label = case
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{i}"));
        if let Err(e) = check(case) {
            failures.push(format!("{name}/{label}: {e}"));
        }
    }
    println!(
        "conformance {name}: {} of {} cases passed",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

fn cases(table: &Value) -> &[Value] {
    table["cases"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn measurement(
    type_name: &str,
    time: &str,
    props: &Value,
    correlation: Option<&str>,
) -> Measurement {
    Measurement {
        type_name: type_name.into(),
        occurrence_time_utc: t(time),
        ingestion_time_utc: None,
        device_id: "device".into(),
        patient_id: Some("patient".into()),
        encounter_id: None,
        correlation_id: correlation.map(str::to_owned),
        properties: props
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| MeasurementProperty {
                name: k.clone(),
                value: text(v).to_owned(),
            })
            .collect(),
    }
}

fn compare_values(group: &ObservationGroup, expected: &Value) -> Result<(), String> {
    let expected = expected
        .as_object()
        .ok_or("expected values not an object")?;
    if expected.len() != group.properties.len() {
        return Err(format!(
            "{} properties, expected {}",
            group.properties.len(),
            expected.len()
        ));
    }
    for (name, values) in expected {
        let got: Vec<(DateTime<Utc>, String)> = group
            .values(name)
            .ok_or_else(|| format!("property {name} missing"))?
            .iter()
            .map(|v| (v.time, v.value.clone()))
            .collect();
        if got != time_values(values) {
            return Err(format!("property {name}: got {got:?}"));
        }
    }
    Ok(())
}

#[test]
fn observation_groups() {
    let Some(table) = table("algorithms/observation-groups.cases.json") else {
        return;
    };
    run("observation-groups", cases(&table), |case| {
        let correlation = case.get("correlationId").and_then(Value::as_str);
        if let Some(segment) = case.get("expectedIdSegment") {
            let group = ObservationGroup {
                type_name: "a".into(),
                device_id: "d".into(),
                patient_id: None,
                encounter_id: None,
                correlation_id: None,
                window: Window {
                    start: t(text(&case["start"])),
                    end: t(text(&case["end"])),
                    interval: PeriodInterval::Hourly,
                },
                properties: Vec::new(),
            };
            let got = group.id_segment(false);
            return (got == text(segment))
                .then_some(())
                .ok_or(format!("id segment {got}"));
        }
        let measurements: Vec<Measurement> = case["measurements"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| measurement("a", text(&m["t"]), &m["props"], correlation))
                    .collect()
            })
            .unwrap_or_else(|| {
                vec![measurement(
                    "a",
                    "2019-01-01T00:00:00Z",
                    &serde_json::json!({"a": "1"}),
                    correlation,
                )]
            });
        if let Some(expected) = case.get("expectedValues") {
            // The group alone (no batch de-duplication), as the original's unit test adds
            // measurements straight to one group.
            let window =
                WindowSpec::new(PeriodInterval::Single).window_for(t("2019-01-01T00:00:00Z"));
            let group =
                ObservationGroup::from_measurements(window, measurements).ok_or("no group")?;
            return compare_values(&group, expected);
        }
        let interval = PeriodInterval::from_minutes(case["periodInterval"].as_i64().unwrap_or(0))
            .ok_or("bad periodInterval")?;
        let spec = WindowSpec::new(interval);
        let batch = group_batch(measurements.clone());
        let result = batch
            .into_iter()
            .map(|g| g.observation_groups(&spec))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.into_iter().flatten().collect::<Vec<_>>());
        // The streaming windower must agree with the batch functions.
        let mut windower = Windower::new(spec);
        let mut streamed = Ok(Vec::new());
        for m in measurements {
            if let Err(rejected) = windower.push(m) {
                streamed = Err(rejected.error);
                break;
            }
        }
        let streamed = streamed.map(|_: Vec<ObservationGroup>| windower.flush_all());
        if streamed != result {
            return Err(format!("windower {streamed:?} != batch {result:?}"));
        }
        if let Some(error) = case.get("expected_error") {
            return match result {
                Err(e) if e.class().name() == text(error) => Ok(()),
                other => Err(format!("expected {error}, got {other:?}")),
            };
        }
        let groups = result.map_err(|e| e.to_string())?;
        let expected = case["expectedGroups"]
            .as_array()
            .ok_or("no expectedGroups")?;
        if groups.len() != expected.len() {
            return Err(format!(
                "{} groups, expected {}",
                groups.len(),
                expected.len()
            ));
        }
        for (g, e) in groups.iter().zip(expected) {
            if g.window.start != t(text(&e["start"])) || g.window.end != t(text(&e["end"])) {
                return Err(format!("window {:?}", g.window));
            }
            if let Some(name) = e.get("name")
                && g.type_name != text(name)
            {
                return Err(format!("name {}", g.type_name));
            }
            if let Some(segment) = e.get("idSegment")
                && g.id_segment(false) != text(segment)
            {
                return Err(format!("id segment {}", g.id_segment(false)));
            }
            compare_values(g, &e["values"])?;
        }
        Ok(())
    });
}

#[test]
fn batch_grouping_dedup() {
    let Some(table) = table("algorithms/batch-grouping-dedup.cases.json") else {
        return;
    };
    run("batch-grouping-dedup", cases(&table), |case| {
        let measurements: Vec<Measurement> = case["measurements"]
            .as_array()
            .ok_or("no measurements")?
            .iter()
            .map(|m| Measurement::from_wire_value(m).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let groups = group_batch(measurements);
        let expected = case["expectedGroups"]
            .as_array()
            .ok_or("no expectedGroups")?;
        if groups.len() != expected.len() {
            return Err(format!("{} groups", groups.len()));
        }
        for (g, e) in groups.iter().zip(expected) {
            let first = g.measurements.first().ok_or("empty group")?;
            if first.type_name != text(&e["MeasureType"])
                || first.device_id != text(&e["DeviceId"])
                || first.patient_id.as_deref() != e["PatientId"].as_str()
            {
                return Err(format!("group fields {first:?}"));
            }
            let data: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = g
                .measurements
                .iter()
                .map(|m| (m.occurrence_time_utc, m.ingestion_time_utc))
                .collect();
            let want: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = e["Data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    (
                        t(text(&d["OccurrenceTimeUtc"])),
                        d["IngestionTimeUtc"].as_str().map(t),
                    )
                })
                .collect();
            if data != want {
                return Err(format!("data {data:?}"));
            }
        }
        Ok(())
    });
}

fn period(case: &Value) -> SamplePeriod {
    SamplePeriod::from_millis(case["periodMs"].as_f64().unwrap_or(0.0)).expect("period")
}

#[test]
fn sampled_data_build() {
    let Some(table) = table("algorithms/sampled-data-build.cases.json") else {
        return;
    };
    run("sampled-data-build", cases(&table), |case| {
        let values = time_values(&case["values"]);
        let got = sampled_data::build(
            &values,
            t(text(&case["start"])),
            t(text(&case["end"])),
            period(case),
        )
        .ok_or("slot limit")?;
        (got == text(&case["expected"]))
            .then_some(())
            .ok_or(format!("got {got:?}"))
    });
}

#[test]
fn sampled_data_merge() {
    let Some(table) = table("algorithms/sampled-data-merge.cases.json") else {
        return;
    };
    run("sampled-data-merge", cases(&table), |case| {
        let existing = time_values(&case["existing"]);
        let new = time_values(&case["new"]);
        let as_refs =
            |v: &[(DateTime<Utc>, String)]| -> Vec<(DateTime<Utc>, String)> { v.to_vec() };
        let e: Vec<(DateTime<Utc>, &str)> =
            existing.iter().map(|(t, v)| (*t, v.as_str())).collect();
        let n: Vec<(DateTime<Utc>, &str)> = new.iter().map(|(t, v)| (*t, v.as_str())).collect();
        let got: Vec<(DateTime<Utc>, String)> = sampled_data::merge(&e, &n)
            .into_iter()
            .map(|(t, v)| (t, v.to_owned()))
            .collect();
        (got == as_refs(&time_values(&case["expected"])))
            .then_some(())
            .ok_or(format!("got {got:?}"))
    });
}

#[test]
fn sampled_data_parse() {
    let Some(table) = table("algorithms/sampled-data-parse.cases.json") else {
        return;
    };
    run("sampled-data-parse", cases(&table), |case| {
        let got: Vec<(DateTime<Utc>, String)> =
            sampled_data::parse(text(&case["data"]), t(text(&case["start"])), period(case))
                .into_iter()
                .map(|(t, v)| (t, v.to_owned()))
                .collect();
        (got == time_values(&case["expected"]))
            .then_some(())
            .ok_or(format!("got {got:?}"))
    });
}

#[test]
fn quantity_value() {
    let Some(table) = table("algorithms/quantity-value.cases.json") else {
        return;
    };
    run("quantity-value", cases(&table), |case| {
        let opt = |k: &str| case["template"][k].as_str().map(Arc::from);
        let mut template = CodeValueFhirTemplate::new("q", Vec::new());
        template.value = Some(FhirValueType::Quantity(QuantityValueType {
            value_name: "v".into(),
            unit: opt("unit"),
            system: opt("system"),
            code: opt("code"),
        }));
        let start = t("2019-01-01T00:00:00Z");
        let values: Vec<TimeValue> = case["values"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, v)| TimeValue {
                time: start + chrono::Duration::seconds(i as i64),
                value: text(v).to_owned(),
            })
            .collect();
        let group = ObservationGroup {
            type_name: "q".into(),
            device_id: "d".into(),
            patient_id: None,
            encounter_id: None,
            correlation_id: None,
            window: WindowSpec::new(PeriodInterval::Hourly).window_for(start),
            properties: vec![iomt_transform::PropertyValues {
                name: "v".into(),
                values,
            }],
        };
        let result = template.create_observation(&group, start);
        match (case.get("expected_error"), result) {
            (Some(error), Err(e)) if e.class().name() == text(error) => Ok(()),
            (None, Ok(obs)) => {
                let got = &obs.to_json()["valueQuantity"];
                (got == &case["expected"])
                    .then_some(())
                    .ok_or(format!("got {got}"))
            }
            (_, other) => Err(format!("got {other:?}")),
        }
    });
}

#[test]
fn identity_hash() {
    let Some(table) = table("observation/identity-hash.cases.json") else {
        return;
    };
    run("identity-hash", cases(&table), |case| {
        let got = resource_id(case["system"].as_str(), text(&case["value"]));
        (got == text(&case["expected"]))
            .then_some(())
            .ok_or(format!("got {got}"))
    });
}

// ---------------------------------------------------------------------------------------------
// FHIR mapping loading
// ---------------------------------------------------------------------------------------------

fn corpus_root() -> Option<PathBuf> {
    transcribed().and_then(|t| t.parent().map(Path::to_path_buf))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Follows `{"$ref": "relative/path"}` from the file at `from`.
fn follow_ref(from: &Path, node: &Value) -> PathBuf {
    let target = text(&node["$ref"]);
    from.parent().unwrap_or(Path::new(".")).join(target)
}

fn loose_contains(haystack: &str, needle: &str) -> bool {
    let needle = needle.trim().trim_end_matches('.').to_lowercase();
    haystack.to_lowercase().contains(&needle)
}

#[test]
fn fhir_template_loading() {
    let Some(table) = table("template-loading.cases.json") else {
        return;
    };
    let root = corpus_root().expect("corpus root");
    let fhir: Vec<Value> = cases(&table)
        .iter()
        .filter(|c| {
            let f = text(&c["factory"]);
            f.contains("CollectionFhirTemplateFactory")
                || f.contains("CodeValueFhirTemplateFactory")
        })
        .cloned()
        .collect();
    run("template-loading (fhir)", &fhir, |case| {
        let file = root.join(text(&case["file"]));
        let mut body = read(&file);
        let single = text(&case["factory"]).starts_with("CodeValueFhirTemplateFactory");
        if single {
            // A lone CodeValueFhir template: load it as a one-entry collection.
            body = format!(
                "{{\"templateType\": \"CollectionFhir\", \"template\": [{}]}}",
                body.trim_start_matches('\u{feff}')
            );
        }
        let (templates, errors) = iomt_transform::FhirTemplates::load_lenient(&body);
        let valid = case["valid"].as_bool().unwrap_or(false);
        if valid != errors.is_empty() {
            return Err(format!("valid={valid} but errors: {errors:?}"));
        }
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for fragment in case["errorsContain"].as_array().into_iter().flatten() {
            if !rendered.iter().any(|e| loose_contains(e, text(fragment))) {
                return Err(format!("no error contains {fragment}: {rendered:?}"));
            }
        }
        if !single && let Some(lines) = case["errorLines"].as_array() {
            let mut got: Vec<u64> = errors
                .iter()
                .filter_map(|e| e.pos.map(|p| u64::from(p.line)))
                .collect();
            let mut want: Vec<u64> = lines.iter().filter_map(Value::as_u64).collect();
            got.sort_unstable();
            want.sort_unstable();
            if got != want {
                return Err(format!("error lines {got:?}, expected {want:?}"));
            }
        }
        if text(&case["file"]).contains("MixedValidity") {
            let bp = templates
                .get("bloodpressure")
                .ok_or("bloodpressure not registered")?;
            if bp.window_spec().interval != PeriodInterval::Hourly {
                return Err("bloodpressure not hourly".into());
            }
        }
        if let Some(parsed) = case.get("parsed") {
            let t = templates.iter().next().ok_or("nothing loaded")?;
            let cv = t
                .as_any()
                .downcast_ref::<CodeValueFhirTemplate>()
                .ok_or("not a CodeValueFhir template")?;
            if let Some(name) = parsed.get("typeName")
                && *cv.type_name != *text(name)
            {
                return Err(format!("typeName {}", cv.type_name));
            }
            if let Some(p) = parsed.get("periodInterval") {
                let want = text(p);
                let got = format!(
                    "{}({})",
                    cv.period_interval.name(),
                    cv.period_interval.minutes()
                );
                if got != want {
                    return Err(format!("periodInterval {got}"));
                }
            }
            let check_value = |v: &FhirValueType, want: &Value| -> Result<(), String> {
                if let Some(ty) = want.get("type")
                    && v.type_name() != text(ty)
                {
                    return Err(format!("value type {}", v.type_name()));
                }
                if let Some(name) = want.get("valueName")
                    && v.value_name() != text(name)
                {
                    return Err(format!("valueName {}", v.value_name()));
                }
                match v {
                    FhirValueType::SampledData(sd) => {
                        if let Some(p) = want.get("defaultPeriod")
                            && Some(sd.default_period.millis()) != p.as_f64()
                        {
                            return Err("defaultPeriod".into());
                        }
                        if let Some(u) = want.get("unit")
                            && sd.unit.as_deref() != u.as_str()
                        {
                            return Err("unit".into());
                        }
                    }
                    FhirValueType::Quantity(q) => {
                        for (k, got) in
                            [("unit", &q.unit), ("system", &q.system), ("code", &q.code)]
                        {
                            if let Some(w) = want.get(k)
                                && got.as_deref() != w.as_str()
                            {
                                return Err(format!("quantity {k}"));
                            }
                        }
                    }
                    FhirValueType::CodeableConcept(c) => {
                        if let Some(w) = want.get("text")
                            && c.concept.text.as_deref() != w.as_str()
                        {
                            return Err("text".into());
                        }
                    }
                    FhirValueType::String(_) => {}
                }
                Ok(())
            };
            match parsed.get("value") {
                Some(Value::Null) if cv.value.is_some() => return Err("value present".into()),
                Some(want) if !want.is_null() => {
                    check_value(cv.value.as_ref().ok_or("value missing")?, want)?
                }
                _ => {}
            }
            if let Some(Value::Array(components)) = parsed.get("components") {
                if components.len() != cv.components.len() {
                    return Err("component count".into());
                }
                for (c, want) in cv.components.iter().zip(components) {
                    check_value(&c.value, &want["value"])?;
                }
            }
            if let Some(want) = parsed.get("components[*].value") {
                for c in &cv.components {
                    check_value(&c.value, want)?;
                }
            }
            if let Some(Value::Array(codes)) = parsed.get("codes") {
                let got: Vec<Value> = cv
                    .codes
                    .iter()
                    .map(|c| serde_json::to_value(c).unwrap_or_default())
                    .collect();
                let want: Vec<Value> = codes.clone();
                if got != want {
                    return Err(format!("codes {got:?}"));
                }
            }
        }
        Ok(())
    });
}

/// Every FHIR mapping shipped with the original and its sample repositories loads cleanly.
#[test]
fn sample_fhir_mappings_load() {
    let Some(root) = corpus_root() else {
        let _ = table("algorithms/observation-groups.cases.json");
        return;
    };
    let shared = root.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut files = Vec::new();
    let mut stack = vec![shared.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let body = read(&path);
                let head: String = body.chars().take(400).collect::<String>().to_lowercase();
                let is_fhir_collection = head.contains("collectionfhir");
                let name = path.to_string_lossy().to_lowercase();
                let invalid_fixture = name.contains("invalid")
                    || name.contains("mixedvalidity")
                    || name.contains("mocks")
                    || name.contains("collectionfhirtemplateempty.json")
                    || name.contains("/transcribed/");
                if is_fhir_collection && !invalid_fixture {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    let cases: Vec<Value> = files
        .iter()
        .map(
            |p| serde_json::json!({"name": p.strip_prefix(&shared).unwrap_or(p).to_string_lossy()}),
        )
        .collect();
    assert!(
        cases.len() >= 10,
        "found only {} sample fhir mappings",
        cases.len()
    );
    run("sample fhir mappings", &cases, |case| {
        let path = shared.join(text(&case["name"]));
        let (templates, errors) = iomt_transform::FhirTemplates::load_lenient(&read(&path));
        if !errors.is_empty() {
            return Err(format!("{errors:?}"));
        }
        if templates.is_empty() && !text(&case["name"]).contains("Empty") {
            return Err("no templates".into());
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Observations end to end (normalized measurements → groups → Observation)
// ---------------------------------------------------------------------------------------------

fn observations_for(
    templates: &iomt_transform::FhirTemplates,
    measurements: Vec<Measurement>,
    ids: Option<(&str, &str)>,
) -> Result<Vec<Value>, String> {
    let issued = t("2024-01-01T00:00:00Z");
    let mut out = Vec::new();
    for group in group_batch(measurements) {
        let template = templates
            .require(group.type_name())
            .map_err(|e| e.to_string())?;
        for og in group
            .observation_groups(&template.window_spec())
            .map_err(|e| e.to_string())?
        {
            let mut obs = template
                .create_observation(&og, issued)
                .map_err(|e| e.to_string())?;
            if let Some((patient, device)) = ids {
                let identity = iomt_transform::ObservationIdentity::new(
                    &og,
                    &iomt_transform::ResolvedIds::new(patient, device, None),
                    iomt_transform::IdPrecision::Seconds,
                )
                .map_err(|e| e.to_string())?;
                obs = obs.with_identity(identity);
            }
            let mut json = obs.to_json();
            json["issued"] = Value::String("__RUNTIME_NOW__".into());
            out.push(json);
        }
    }
    Ok(out)
}

fn wire_measurements(v: &Value) -> Result<Vec<Measurement>, String> {
    v.as_array()
        .ok_or("not an array")?
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m["IngestionTimeUtc"].as_str() == Some("__EVENT_ENQUEUED_TIME_UTC__") {
                m["IngestionTimeUtc"] = Value::Null;
            }
            Measurement::from_wire_value(&m).map_err(|e| e.to_string())
        })
        .collect()
}

fn same_json(got: &Value, want: &Value) -> Result<(), String> {
    // Member order matters: compare the serialized text.
    let (g, w) = (
        serde_json::to_string_pretty(got).unwrap_or_default(),
        serde_json::to_string_pretty(want).unwrap_or_default(),
    );
    if g == w {
        Ok(())
    } else {
        Err(format!("got:\n{g}\nexpected:\n{w}"))
    }
}

#[test]
fn observation_cases() {
    let Some(dir) = transcribed() else {
        let _ = table("algorithms/observation-groups.cases.json");
        return;
    };
    let cases = vec![
        serde_json::json!({"name": "docs-quantity-heartrate"}),
        serde_json::json!({"name": "e2e-basic-heartrate-create"}),
        serde_json::json!({"name": "validation/hr-bp-valid"}),
        serde_json::json!({"name": "generate-observation-references"}),
    ];
    run("observation", &cases, |case| match text(&case["name"]) {
        "docs-quantity-heartrate" => {
            let d = dir.join("observation/docs-quantity-heartrate");
            let templates =
                iomt_transform::FhirTemplates::from_json_str(&read(&d.join("fhirmapping.json")))
                    .map_err(|e| e.to_string())?;
            let measurements = wire_measurements(
                &serde_json::from_str(&read(&d.join("normalized.json")))
                    .map_err(|e| e.to_string())?,
            )?;
            let got = observations_for(&templates, measurements, None)?;
            let want: Value = serde_json::from_str(&read(&d.join("expected-observation.json")))
                .map_err(|e| e.to_string())?;
            same_json(&Value::Array(got), &Value::Array(vec![want]))
        }
        "e2e-basic-heartrate-create" => {
            let d = dir.join("observation/e2e-basic-heartrate-create");
            let refs_path = d.join("templates.ref.json");
            let refs: Value = serde_json::from_str(&read(&refs_path)).map_err(|e| e.to_string())?;
            let mapping = follow_ref(&refs_path, &refs["fhirMapping"]);
            let templates = iomt_transform::FhirTemplates::from_json_str(&read(&mapping))
                .map_err(|e| e.to_string())?;
            let measurements = wire_measurements(
                &serde_json::from_str(&read(&d.join("expected-normalized.json")))
                    .map_err(|e| e.to_string())?,
            )?;
            // Create mode: Patient and Device ids are hashes of their identifiers.
            let patient = resource_id(None, "patient1");
            let device = resource_id(None, "device1");
            let got = observations_for(&templates, measurements, Some((&patient, &device)))?;
            let want: Value = serde_json::from_str(&read(&d.join("expected-observation.json")))
                .map_err(|e| e.to_string())?;
            same_json(&Value::Array(got.clone()), &Value::Array(vec![want]))?;
            let requests: Value =
                serde_json::from_str(&read(&d.join("expected-fhir-requests.json")))
                    .map_err(|e| e.to_string())?;
            let search = text(&requests[5]["url"]);
            let put = text(&requests[6]["url"]);
            let value = text(&got[0]["identifier"][0]["value"]);
            let id = text(&got[0]["id"]);
            if search
                != format!(
                    "Observation?identifier={}|{value}",
                    iomt_transform::SERVICE_SYSTEM
                )
                || put != format!("Observation/{id}")
            {
                return Err(format!("requests {search} / {put}"));
            }
            Ok(())
        }
        "validation/hr-bp-valid" => {
            let d = dir.join("validation/hr-bp-valid");
            let refs_path = d.join("fhir-template.ref.json");
            let refs: Value = serde_json::from_str(&read(&refs_path)).map_err(|e| e.to_string())?;
            let templates =
                iomt_transform::FhirTemplates::from_json_str(&read(&follow_ref(&refs_path, &refs)))
                    .map_err(|e| e.to_string())?;
            let measurements = wire_measurements(
                &serde_json::from_str(&read(&d.join("expected.json")))
                    .map_err(|e| e.to_string())?,
            )?;
            let got = observations_for(&templates, measurements, None)?;
            let want: Value = serde_json::from_str(&read(&d.join("expected-observation.json")))
                .map_err(|e| e.to_string())?;
            same_json(&Value::Array(got), &want)
        }
        "generate-observation-references" => {
            let d = dir.join("observation/generate-observation-references");
            let spec: Value =
                serde_json::from_str(&read(&d.join("expected.json"))).map_err(|e| e.to_string())?;
            let identity = iomt_transform::ObservationIdentity {
                patient_id: text(&spec["ids"]["Patient"]).into(),
                device_id: text(&spec["ids"]["Device"]).into(),
                encounter_id: spec["ids"]["Encounter"].as_str().map(Arc::from),
                identifier_value: text(&spec["identifier"]["value"]).into(),
                id: resource_id(
                    spec["identifier"]["system"].as_str(),
                    text(&spec["identifier"]["value"]),
                ),
            };
            let group = ObservationGroup {
                type_name: "t".into(),
                device_id: "d".into(),
                patient_id: None,
                encounter_id: None,
                correlation_id: None,
                window: WindowSpec::default().window_for(t("2019-01-01T00:00:00Z")),
                properties: Vec::new(),
            };
            let obs = CodeValueFhirTemplate::new("t", Vec::new())
                .create_observation(&group, t("2019-01-01T00:00:00Z"))
                .map_err(|e| e.to_string())?
                .with_identity(identity)
                .to_json();
            let want = &spec["expected"];
            for key in ["subject", "encounter", "device"] {
                if obs[key] != want[key] {
                    return Err(format!("{key}: {}", obs[key]));
                }
            }
            if obs["id"] != want["id(inferred)"] {
                return Err(format!("id {}", obs["id"]));
            }
            Ok(())
        }
        other => Err(format!("unknown case {other}")),
    });
}
