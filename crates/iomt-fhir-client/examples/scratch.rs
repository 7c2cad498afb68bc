//! scratch timing
use chrono::{DateTime, TimeDelta, Utc};
use iomt_transform::*;
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let mapping = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "spo2", "periodInterval": 0,
    "category": [{"text": "Vital Signs", "codes": [{"code": "vital-signs",
      "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
    "codes": [{"code": "59408-5", "system": "http://loinc.org", "display": "Oxygen saturation"}],
    "value": {"valueType": "Quantity", "valueName": "spo2", "unit": "%",
              "system": "http://unitsofmeasure.org", "code": "%"}}}]}"#;
    let t = FhirTemplates::from_json_str(mapping).unwrap();
    let tpl = t.require("spo2").unwrap().clone();
    let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let n = 20000;
    let groups: Vec<ObservationGroup> = (0..n)
        .map(|i| {
            let tt = start + TimeDelta::seconds(i);
            ObservationGroup {
                type_name: "spo2".into(),
                device_id: "dev-1".into(),
                patient_id: None,
                encounter_id: None,
                correlation_id: None,
                window: WindowSpec::new(PeriodInterval::Single).window_for(tt),
                properties: vec![PropertyValues {
                    name: "spo2".into(),
                    values: vec![TimeValue {
                        time: tt,
                        value: "97".into(),
                    }],
                }],
            }
        })
        .collect();
    let ids = ResolvedIds::new("p1", "d1", None);
    let s = Instant::now();
    let mut bodies = Vec::new();
    for g in &groups {
        let id = ObservationIdentity::new(g, &ids, IdPrecision::Seconds).unwrap();
        let o = tpl
            .create_observation(g, Utc::now())
            .unwrap()
            .with_identity(id);
        bodies.push(o.to_json_bytes());
    }
    println!(
        "identity+create+serialize: {:.2} us",
        s.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let s = Instant::now();
    let mut vals = Vec::new();
    for b in &bodies {
        vals.push(serde_json::from_slice::<serde_json::Value>(b).unwrap());
    }
    println!(
        "parse value: {:.2} us (len {})",
        s.elapsed().as_secs_f64() * 1e6 / n as f64,
        bodies[0].len()
    );
    let cache: moka::sync::Cache<String, Arc<Vec<u8>>> = moka::sync::Cache::builder()
        .max_capacity(5000)
        .time_to_live(std::time::Duration::from_secs(3600))
        .build();
    let keys: Vec<String> = (0..n)
        .map(|i| format!("p1.d1.spo2.2024{i:010}Z.2024{i:010}Z"))
        .collect();
    let s = Instant::now();
    for k in &keys {
        let _ = cache.get(k);
    }
    println!(
        "moka get miss: {:.2} us",
        s.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let s = Instant::now();
    for (k, b) in keys.iter().zip(&bodies) {
        cache.insert(k.clone(), Arc::new(b.clone()));
    }
    println!(
        "moka insert: {:.2} us",
        s.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let s = Instant::now();
    for _ in 0..n {
        let u = url::Url::parse("http://127.0.0.1:8080/").unwrap();
        let mut u2 = u.clone();
        u2.path_segments_mut().unwrap().pop_if_empty().extend([
            "Observation",
            "c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee012",
        ]);
        std::hint::black_box(u2);
    }
    println!("url: {:.2} us", s.elapsed().as_secs_f64() * 1e6 / n as f64);
}
