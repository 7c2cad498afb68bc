//! Cases of the FHIR half: the algorithm tables (grouping, de-duplication, SampledData,
//! Quantity, identity hashes), FHIR mapping loading, and Observations.
//!
//! Every case calls the functions the service and the mapping debugger call
//! (`group_batch`, `observation_groups`, `create_observation`, `merge_observation`,
//! `ObservationIdentity`, and `iomt_debugger::transform_batch` for whole batches).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use iomt_debugger::{IdentityMode, TestOptions};
use iomt_model::{Measurement, MeasurementProperty};
use iomt_transform::fhir_template::{FhirValueType, QuantityValueType};
use iomt_transform::group::{PeriodInterval, TimeValue, Window, WindowSpec, group_batch};
use iomt_transform::observation::resource_id;
use iomt_transform::sampled_data::{self, SamplePeriod};
use iomt_transform::{
    CodeValueFhirTemplate, FhirTemplate, FhirTemplates, MergeOutcome, ObservationGroup, Windower,
};
use serde_json::Value;

use crate::{check_error, read_json, read_text, resolve_ref, same_json};

/// The tables of `transcribed/algorithms` (and `observation/identity-hash`) run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `deterministic-hash`: the partition-key hash.
    DeterministicHash,
    /// `observation-groups`: windows and values per property.
    ObservationGroups,
    /// `batch-grouping-dedup`: batch keys and de-duplication by occurrence time.
    BatchGroupingDedup,
    /// `sampled-data-build`: the SampledData data string.
    SampledDataBuild,
    /// `sampled-data-merge`: merging time values, new wins.
    SampledDataMerge,
    /// `sampled-data-parse`: reading a data string back.
    SampledDataParse,
    /// `quantity-value`: Quantity values (.NET decimal, exactly one value).
    QuantityValue,
    /// `identity-hash`: SHA-256 resource ids.
    IdentityHash,
}

impl Table {
    /// Every table, with its file under `transcribed/` and its case-name prefix.
    pub const ALL: &'static [(Table, &'static str, &'static str)] = &[
        (
            Table::DeterministicHash,
            "algorithms/deterministic-hash.cases.json",
            "algorithms/deterministic-hash",
        ),
        (
            Table::ObservationGroups,
            "algorithms/observation-groups.cases.json",
            "algorithms/observation-groups",
        ),
        (
            Table::BatchGroupingDedup,
            "algorithms/batch-grouping-dedup.cases.json",
            "algorithms/batch-grouping-dedup",
        ),
        (
            Table::SampledDataBuild,
            "algorithms/sampled-data-build.cases.json",
            "algorithms/sampled-data-build",
        ),
        (
            Table::SampledDataMerge,
            "algorithms/sampled-data-merge.cases.json",
            "algorithms/sampled-data-merge",
        ),
        (
            Table::SampledDataParse,
            "algorithms/sampled-data-parse.cases.json",
            "algorithms/sampled-data-parse",
        ),
        (
            Table::QuantityValue,
            "algorithms/quantity-value.cases.json",
            "algorithms/quantity-value",
        ),
        (
            Table::IdentityHash,
            "observation/identity-hash.cases.json",
            "observation/identity-hash",
        ),
    ];
}

/// Runs one row of a table.
pub fn run_algorithm(table: Table, case: &Value) -> Result<(), String> {
    match table {
        Table::DeterministicHash => run_hash(case),
        Table::ObservationGroups => observation_groups(case),
        Table::BatchGroupingDedup => batch_grouping_dedup(case),
        Table::SampledDataBuild => sampled_data_build(case),
        Table::SampledDataMerge => sampled_data_merge(case),
        Table::SampledDataParse => sampled_data_parse(case),
        Table::QuantityValue => quantity_value(case),
        Table::IdentityHash => identity_hash(case),
    }
}

fn t(s: &str) -> Result<DateTime<Utc>, String> {
    iomt_model::timestamp::parse(s).ok_or_else(|| format!("bad time {s:?} in the case"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn time_values(v: &Value) -> Result<Vec<(DateTime<Utc>, String)>, String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|pair| Ok((t(text(&pair[0]))?, text(&pair[1]).to_owned())))
        .collect()
}

fn run_hash(entry: &Value) -> Result<(), String> {
    let range = entry["range"].as_i64().unwrap_or(256) as i32;
    let result = match entry["input"].as_str() {
        // Rust strings cannot be null; the original's ArgumentNullException has no counterpart.
        None => return Ok(()),
        Some(input) => iomt_model::partition::deterministic_hash(input, range),
    };
    match (
        result,
        entry["expected"].as_str(),
        entry["expected_error"].as_str(),
    ) {
        (Ok(got), Some(want), _) if got == want => Ok(()),
        (Err(_), _, Some(_)) => Ok(()),
        (got, want, err) => Err(format!("got {got:?}, expected {want:?} / error {err:?}")),
    }
}

fn measurement(
    type_name: &str,
    time: &str,
    props: &Value,
    correlation: Option<&str>,
) -> Result<Measurement, String> {
    Ok(Measurement {
        type_name: type_name.into(),
        occurrence_time_utc: t(time)?,
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
    })
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
        if got != time_values(values)? {
            return Err(format!("property {name}: got {got:?}"));
        }
    }
    Ok(())
}

fn observation_groups(case: &Value) -> Result<(), String> {
    let correlation = case.get("correlationId").and_then(Value::as_str);
    if let Some(segment) = case.get("expectedIdSegment") {
        let group = ObservationGroup {
            type_name: "a".into(),
            device_id: "d".into(),
            patient_id: None,
            encounter_id: None,
            correlation_id: None,
            window: Window {
                start: t(text(&case["start"]))?,
                end: t(text(&case["end"]))?,
                interval: PeriodInterval::Hourly,
            },
            properties: Vec::new(),
        };
        let got = group.id_segment(false);
        return (got == text(segment))
            .then_some(())
            .ok_or(format!("id segment {got}"));
    }
    let measurements: Vec<Measurement> = match case["measurements"].as_array() {
        Some(ms) => ms
            .iter()
            .map(|m| measurement("a", text(&m["t"]), &m["props"], correlation))
            .collect::<Result<_, _>>()?,
        None => vec![measurement(
            "a",
            "2019-01-01T00:00:00Z",
            &serde_json::json!({"a": "1"}),
            correlation,
        )?],
    };
    if let Some(expected) = case.get("expectedValues") {
        // The group alone (no batch de-duplication), as the original's unit test adds
        // measurements straight to one group.
        let window = WindowSpec::new(PeriodInterval::Single).window_for(t("2019-01-01T00:00:00Z")?);
        let group = ObservationGroup::from_measurements(window, measurements).ok_or("no group")?;
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
        if g.window.start != t(text(&e["start"]))? || g.window.end != t(text(&e["end"]))? {
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
}

fn batch_grouping_dedup(case: &Value) -> Result<(), String> {
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
                Ok((
                    t(text(&d["OccurrenceTimeUtc"]))?,
                    d["IngestionTimeUtc"].as_str().map(t).transpose()?,
                ))
            })
            .collect::<Result<_, String>>()?;
        if data != want {
            return Err(format!("data {data:?}"));
        }
    }
    Ok(())
}

fn period(case: &Value) -> Result<SamplePeriod, String> {
    SamplePeriod::from_millis(case["periodMs"].as_f64().unwrap_or(0.0)).ok_or("bad periodMs".into())
}

fn sampled_data_build(case: &Value) -> Result<(), String> {
    let values = time_values(&case["values"])?;
    let got = sampled_data::build(
        &values,
        t(text(&case["start"]))?,
        t(text(&case["end"]))?,
        period(case)?,
    )
    .ok_or("slot limit")?;
    (got == text(&case["expected"]))
        .then_some(())
        .ok_or(format!("got {got:?}"))
}

fn sampled_data_merge(case: &Value) -> Result<(), String> {
    let existing = time_values(&case["existing"])?;
    let new = time_values(&case["new"])?;
    let e: Vec<(DateTime<Utc>, &str)> = existing.iter().map(|(t, v)| (*t, v.as_str())).collect();
    let n: Vec<(DateTime<Utc>, &str)> = new.iter().map(|(t, v)| (*t, v.as_str())).collect();
    let got: Vec<(DateTime<Utc>, String)> = sampled_data::merge(&e, &n)
        .into_iter()
        .map(|(t, v)| (t, v.to_owned()))
        .collect();
    (got == time_values(&case["expected"])?)
        .then_some(())
        .ok_or(format!("got {got:?}"))
}

fn sampled_data_parse(case: &Value) -> Result<(), String> {
    let got: Vec<(DateTime<Utc>, String)> =
        sampled_data::parse(text(&case["data"]), t(text(&case["start"]))?, period(case)?)
            .into_iter()
            .map(|(t, v)| (t, v.to_owned()))
            .collect();
    (got == time_values(&case["expected"])?)
        .then_some(())
        .ok_or(format!("got {got:?}"))
}

fn quantity_value(case: &Value) -> Result<(), String> {
    let opt = |k: &str| case["template"][k].as_str().map(Arc::from);
    let mut template = CodeValueFhirTemplate::new("q", Vec::new());
    template.value = Some(FhirValueType::Quantity(QuantityValueType {
        value_name: "v".into(),
        unit: opt("unit"),
        system: opt("system"),
        code: opt("code"),
    }));
    let start = t("2019-01-01T00:00:00Z")?;
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
}

fn identity_hash(case: &Value) -> Result<(), String> {
    let got = resource_id(case["system"].as_str(), text(&case["value"]));
    (got == text(&case["expected"]))
        .then_some(())
        .ok_or(format!("got {got}"))
}

// ---------------------------------------------------------------------------------------------
// FHIR mapping loading
// ---------------------------------------------------------------------------------------------

fn loose_contains(haystack: &str, needle: &str) -> bool {
    let needle = needle.trim().trim_end_matches('.').to_lowercase();
    haystack.to_lowercase().contains(&needle)
}

/// Loads a FHIR mapping as the table entry says (a lone `CodeValueFhir` template is wrapped
/// into a collection) and checks validity, error fragments and lines, and parsed fields.
pub fn run_fhir_template_loading(file: &Path, wrap: bool, case: &Value) -> Result<(), String> {
    let mut body = read_text(file)?;
    if wrap {
        body = format!(
            "{{\"templateType\": \"CollectionFhir\", \"template\": [{}]}}",
            body.trim_start_matches('\u{feff}')
        );
    }
    let (templates, errors) = FhirTemplates::load_lenient(&body);
    let valid = case["valid"].as_bool().unwrap_or(true);
    if valid != errors.is_empty() {
        return Err(format!("valid={valid} but errors: {errors:#?}"));
    }
    let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for fragment in case["errorsContain"].as_array().into_iter().flatten() {
        if !rendered.iter().any(|e| loose_contains(e, text(fragment))) {
            return Err(format!("no error contains {fragment}: {rendered:#?}"));
        }
    }
    if !wrap && let Some(lines) = case["errorLines"].as_array() {
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
    if file.to_string_lossy().contains("MixedValidity") {
        let bp = templates
            .get("bloodpressure")
            .ok_or("bloodpressure not registered")?;
        if bp.window_spec().interval != PeriodInterval::Hourly {
            return Err("bloodpressure not hourly".into());
        }
    }
    let file_name = file.to_string_lossy();
    if valid && templates.is_empty() && !file_name.contains("Empty") {
        return Err("valid, but no template loaded".into());
    }
    match case.get("parsed") {
        Some(parsed) => check_parsed(&templates, parsed),
        None => Ok(()),
    }
}

fn check_value(v: &FhirValueType, want: &Value) -> Result<(), String> {
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
            for (k, got) in [("unit", &q.unit), ("system", &q.system), ("code", &q.code)] {
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
}

fn check_parsed(templates: &FhirTemplates, parsed: &Value) -> Result<(), String> {
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
            if let Some(Value::Array(codes)) = want.get("codes") {
                let got: Vec<Value> = c
                    .codes
                    .iter()
                    .map(|c| serde_json::to_value(c).unwrap_or_default())
                    .collect();
                if !codes_equal(&got, codes) {
                    return Err(format!("component codes {got:?}"));
                }
            }
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
        if !codes_equal(&got, codes) {
            return Err(format!("codes {got:?}"));
        }
    }
    Ok(())
}

/// Codings compared member by member (the corpus writes their members in varying order).
fn codes_equal(got: &[Value], want: &[Value]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            ["code", "system", "display"]
                .iter()
                .all(|k| g.get(k) == w.get(k))
        })
}

// ---------------------------------------------------------------------------------------------
// Observations
// ---------------------------------------------------------------------------------------------

/// The placeholder the corpus and our fixtures write for `issued` (the original stamps the
/// time of the write).
pub const RUNTIME_NOW: &str = "__RUNTIME_NOW__";

fn fixed_issued() -> DateTime<Utc> {
    iomt_model::timestamp::parse("2000-01-01T00:00:00Z").unwrap_or_default()
}

fn wire_measurements(v: &Value) -> Result<Vec<Measurement>, String> {
    v.as_array()
        .ok_or("measurements are not an array")?
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

/// Replaces `issued` by the placeholder where the expected Observation has it.
fn mask_issued(got: &mut Value, want: &Value) {
    if want["issued"] == RUNTIME_NOW && got.get("issued").is_some() {
        got["issued"] = Value::String(RUNTIME_NOW.into());
    }
}

fn expected_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        one => vec![one],
    }
}

/// An observation case in the fixture format (see `conformance/fixtures/README.md`):
/// `fhirmapping.json` (or `fhir-template.ref.json`), `normalized.json`, optional
/// `options.json` and `existing.json`, `expected-observation.json` and optional
/// `expected-errors.json`.
pub fn run_observation_fixture(dir: &Path) -> Result<(), String> {
    let mapping = ["fhirmapping.json", "fhir-template.ref.json"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or("no fhirmapping.json")?;
    let templates = FhirTemplates::from_json_str(&read_text(&resolve_ref(&mapping)?)?)
        .map_err(|e| e.to_string())?;
    let measurements = wire_measurements(&read_json(&dir.join("normalized.json"))?)?;
    let options = read_options(&dir.join("options.json"))?;
    let want = expected_list(read_json(&dir.join("expected-observation.json"))?);
    let want_errors = match dir.join("expected-errors.json") {
        p if p.exists() => expected_list(read_json(&p)?),
        _ => Vec::new(),
    };

    let existing = dir.join("existing.json");
    if existing.exists() {
        return run_merge(&templates, measurements, &read_json(&existing)?, &want);
    }

    let outcome = iomt_debugger::transform_batch(&templates, measurements, &options);
    let mut got: Vec<Value> = outcome
        .observations
        .into_iter()
        .map(|o| o.observation)
        .collect();
    for (g, w) in got.iter_mut().zip(&want) {
        mask_issued(g, w);
    }
    same_json(&Value::Array(got), &Value::Array(want))?;
    if outcome.errors.len() != want_errors.len() {
        return Err(format!(
            "{} group errors, expected {}: {:#?}",
            outcome.errors.len(),
            want_errors.len(),
            outcome.errors
        ));
    }
    for (e, w) in outcome.errors.iter().zip(&want_errors) {
        check_error(w, e.class.name(), &e.message)?;
    }
    Ok(())
}

fn read_options(path: &Path) -> Result<TestOptions, String> {
    let mut options = TestOptions::new(fixed_issued()).with_identity(IdentityMode::None);
    if path.exists() {
        let v = read_json(path)?;
        if let Some(identity) = v.get("identity") {
            options.identity = serde_json::from_value(identity.clone())
                .map_err(|e| format!("options.json identity: {e}"))?;
        }
    }
    Ok(options)
}

fn run_merge(
    templates: &FhirTemplates,
    measurements: Vec<Measurement>,
    existing: &Value,
    want: &[Value],
) -> Result<(), String> {
    let mut merged = Vec::new();
    for group in group_batch(measurements) {
        let template = templates
            .require(group.type_name())
            .map_err(|e| e.to_string())?
            .clone();
        for og in group
            .observation_groups(&template.window_spec())
            .map_err(|e| e.to_string())?
        {
            let outcome = template
                .merge_observation(existing, &og)
                .map_err(|e| e.to_string())?;
            merged.push(match outcome {
                MergeOutcome::Changed(v) => v,
                MergeOutcome::Unchanged => Value::String("unchanged".into()),
            });
        }
    }
    same_json(&Value::Array(merged), &Value::Array(want.to_vec()))
}

/// `transcribed/observation/e2e-basic-heartrate-create`: the README's sample message through
/// the `basic` sample mappings, Create identities (ids hashed from the identifiers), and the
/// requests' identifier search and PUT.
pub fn run_e2e_create(dir: &Path) -> Result<(), String> {
    let refs_path = dir.join("templates.ref.json");
    let refs = read_json(&refs_path)?;
    let follow = |node: &Value| -> PathBuf { crate::lexical(&dir.join(text(&node["$ref"]))) };
    // Normalization, as the service does it (event envelope as is).
    let device =
        iomt_normalize::DeviceMapping::from_json_str(&read_text(&follow(&refs["deviceContent"]))?)
            .map_err(|e| e.to_string())?;
    let event = read_text(&dir.join("device-event.json"))?;
    let token = iomt_normalize::parse_token(event.as_bytes()).map_err(|e| e.to_string())?;
    let normalized = device.normalize(&token).map_err(|e| e.to_string())?;
    let want_normalized = wire_measurements(&read_json(&dir.join("expected-normalized.json"))?)?;
    if normalized != want_normalized {
        return Err(format!(
            "measurements {normalized:#?}\nexpected {want_normalized:#?}"
        ));
    }
    // Transformation with the ids the Create service gives the Patient and Device it creates.
    let templates = FhirTemplates::from_json_str(&read_text(&follow(&refs["fhirMapping"]))?)
        .map_err(|e| e.to_string())?;
    let patient = resource_id(None, "patient1");
    let device_id = resource_id(None, "device1");
    let mut got = Vec::new();
    for group in group_batch(normalized) {
        let template = templates
            .require(group.type_name())
            .map_err(|e| e.to_string())?
            .clone();
        for og in group
            .observation_groups(&template.window_spec())
            .map_err(|e| e.to_string())?
        {
            let identity = iomt_transform::ObservationIdentity::new(
                &og,
                &iomt_transform::ResolvedIds::new(&patient, &device_id, None),
                iomt_transform::IdPrecision::Seconds,
            )
            .map_err(|e| e.to_string())?;
            let obs = template
                .create_observation(&og, fixed_issued())
                .map_err(|e| e.to_string())?
                .with_identity(identity);
            got.push(obs.to_json());
        }
    }
    let want = read_json(&dir.join("expected-observation.json"))?;
    for g in &mut got {
        mask_issued(g, &want);
    }
    same_json(&Value::Array(got.clone()), &Value::Array(vec![want]))?;
    let requests = read_json(&dir.join("expected-fhir-requests.json"))?;
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
    // The Patient and Device PUTs use the same hashed ids.
    if text(&requests[2]["url"]) != format!("Patient/{patient}")
        || text(&requests[4]["url"]) != format!("Device/{device_id}")
    {
        return Err("patient/device ids differ from the requests".into());
    }
    Ok(())
}

/// `transcribed/observation/generate-observation-references`: the identity members copied
/// onto an Observation.
pub fn run_generate_references(dir: &Path) -> Result<(), String> {
    let spec = read_json(&dir.join("expected.json"))?;
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
        window: WindowSpec::default().window_for(t("2019-01-01T00:00:00Z")?),
        properties: Vec::new(),
    };
    let obs = CodeValueFhirTemplate::new("t", Vec::new())
        .create_observation(&group, t("2019-01-01T00:00:00Z")?)
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
