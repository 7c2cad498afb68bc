//! [`ObservationGroup`]: the measurements of one key in one window, arranged per property —
//! exactly what one Observation is built from.
//!
//! # What must hold (the original's `SortedObservationGroup`, SPEC §6)
//! * The group's identity fields (type, device, patient, encounter, correlation id) come from its
//!   first kept measurement; all its measurements share them exactly.
//! * The measurements were de-duplicated by `OccurrenceTimeUtc` before the group was built (by
//!   [`group_batch`](crate::group::group_batch) or the [`Windower`](crate::group::Windower)):
//!   for each distinct time the one with the greatest `IngestionTimeUtc` is kept (ties and
//!   missing ingestion times: the first one), in first-appearance order.
//! * Values are collected per property name (exact, case-sensitive), sorted by time; a second
//!   value with an identical time for the same property is dropped (the first wins).

use chrono::{DateTime, Utc};
use iomt_model::Measurement;

use super::window::{PeriodInterval, Window};
use crate::time::{IdToken, ticks};

/// One value of a property at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeValue {
    /// The measurement's occurrence time.
    pub time: DateTime<Utc>,
    /// The value text.
    pub value: String,
}

/// Every value of one property in a group, sorted by time, one per instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyValues {
    /// The property (template `valueName`).
    pub name: String,
    /// The values, sorted by time, times distinct.
    pub values: Vec<TimeValue>,
}

/// The measurements of one key in one window: what one Observation is built or merged from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationGroup {
    /// The measurement type (the original's group `Name`), spelled as in the measurements.
    pub type_name: String,
    /// The device identifier from the message.
    pub device_id: String,
    /// The patient identifier from the message.
    pub patient_id: Option<String>,
    /// The encounter identifier from the message.
    pub encounter_id: Option<String>,
    /// The correlation id from the message.
    pub correlation_id: Option<String>,
    /// The period the Observation covers.
    pub window: Window,
    /// Values per property, properties in first-appearance order.
    pub properties: Vec<PropertyValues>,
}

impl ObservationGroup {
    /// The values of property `name` (exact, case-sensitive), sorted by time.
    pub fn values(&self, name: &str) -> Option<&[TimeValue]> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.values.as_slice())
    }

    /// The identifier segment that makes the Observation's identifier unique for its window:
    /// `yyyyMMddHHmmssZ.yyyyMMddHHmmssZ` of the window bounds (with `millis`,
    /// `yyyyMMddHHmmssfffZ`), or the correlation id for correlation windows.
    pub fn id_segment(&self, millis: bool) -> String {
        let mut out = Vec::with_capacity(40);
        self.push_id_segment(&mut out, millis);
        // Digits, `Z`, `.` or the correlation id's own (valid) text: always UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends [`id_segment`](Self::id_segment) to `out` as UTF-8 bytes.
    pub(crate) fn push_id_segment(&self, out: &mut Vec<u8>, millis: bool) {
        if self.window.interval == PeriodInterval::CorrelationId {
            out.extend_from_slice(
                self.correlation_id
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes(),
            );
            return;
        }
        let (start, n) = IdToken {
            ts: self.window.start,
            millis,
        }
        .bytes();
        out.extend_from_slice(&start[..n]);
        out.push(b'.');
        if self.window.end == self.window.start {
            // Instant windows (the most common kind): the same token twice.
            out.extend_from_slice(&start[..n]);
            return;
        }
        let (end, n) = IdToken {
            ts: self.window.end,
            millis,
        }
        .bytes();
        out.extend_from_slice(&end[..n]);
    }

    /// Builds a group from the measurements of one key in `window`, collecting values per
    /// property (sorted by time, first value wins per instant). The measurements are taken as
    /// given: callers de-duplicate by occurrence time first ([`crate::group::group_batch`] and
    /// the [`Windower`](crate::group::Windower) do). `None` when `measurements` is empty.
    pub fn from_measurements(window: Window, measurements: Vec<Measurement>) -> Option<Self> {
        Self::from_iter(window, measurements)
    }

    pub(crate) fn from_iter(
        window: Window,
        measurements: impl IntoIterator<Item = Measurement>,
    ) -> Option<Self> {
        let mut kept = measurements.into_iter();
        let first = kept.next()?;
        let Measurement {
            type_name,
            device_id,
            patient_id,
            encounter_id,
            correlation_id,
            occurrence_time_utc,
            properties: first_props,
            ..
        } = first;
        // The first measurement's property list becomes the group's: `PropertyValues` has the
        // layout of `MeasurementProperty`, so this collect reuses its allocation in place.
        let mut properties: Vec<PropertyValues> = first_props
            .into_iter()
            .map(|p| PropertyValues {
                name: p.name,
                values: vec![TimeValue {
                    time: occurrence_time_utc,
                    value: p.value,
                }],
            })
            .collect();
        if properties.len() > 1 {
            merge_repeated_names(&mut properties);
        }
        for m in kept {
            collect(&mut properties, m.occurrence_time_utc, m.properties);
        }
        for p in &mut properties {
            if p.values.len() > 1 {
                // Stable: equal times keep arrival order, then the first one wins.
                p.values.sort_by_key(|v| v.time);
                p.values.dedup_by_key(|v| v.time);
            }
        }
        Some(ObservationGroup {
            type_name,
            device_id,
            patient_id,
            encounter_id,
            correlation_id,
            window,
            properties,
        })
    }
}

/// Folds properties repeating an earlier name into the earlier one (values in order), so that
/// each name appears once, in first-appearance order.
fn merge_repeated_names(properties: &mut Vec<PropertyValues>) {
    let mut i = 1;
    while i < properties.len() {
        match properties[..i]
            .iter()
            .position(|p| p.name == properties[i].name)
        {
            Some(earlier) => {
                let repeated = properties.remove(i);
                properties[earlier].values.extend(repeated.values);
            }
            None => i += 1,
        }
    }
}

fn collect(
    properties: &mut Vec<PropertyValues>,
    time: DateTime<Utc>,
    props: Vec<iomt_model::MeasurementProperty>,
) {
    for p in props {
        let value = TimeValue {
            time,
            value: p.value,
        };
        match properties.iter_mut().find(|x| x.name == p.name) {
            Some(existing) => existing.values.push(value),
            None => properties.push(PropertyValues {
                name: p.name,
                values: vec![value],
            }),
        }
    }
}

/// One measurement per distinct occurrence time: the greatest ingestion time wins, ties (and
/// missing ingestion times) keep the first; first-appearance order.
pub(crate) fn dedup_by_occurrence(mut measurements: Vec<Measurement>) -> Vec<Measurement> {
    match measurements.len() {
        0 | 1 => return measurements,
        2 => {
            if ticks(measurements[0].occurrence_time_utc)
                != ticks(measurements[1].occurrence_time_utc)
            {
                return measurements;
            }
            let second = measurements.pop();
            if let Some(second) = second
                && second.ingestion_time_utc > measurements[0].ingestion_time_utc
            {
                measurements[0] = second;
            }
            return measurements;
        }
        _ => {}
    }
    let mut slot_of: std::collections::HashMap<i64, usize> =
        std::collections::HashMap::with_capacity(measurements.len());
    let mut kept: Vec<Measurement> = Vec::with_capacity(measurements.len());
    for m in measurements {
        let key = ticks(m.occurrence_time_utc);
        match slot_of.get(&key) {
            Some(&i) => {
                if m.ingestion_time_utc > kept[i].ingestion_time_utc {
                    kept[i] = m;
                }
            }
            None => {
                slot_of.insert(key, kept.len());
                kept.push(m);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use iomt_model::MeasurementProperty;

    fn t(s: &str) -> DateTime<Utc> {
        iomt_model::timestamp::parse(s).unwrap()
    }

    fn m(time: &str, ingest: Option<&str>, props: &[(&str, &str)]) -> Measurement {
        Measurement {
            type_name: "hr".into(),
            occurrence_time_utc: t(time),
            ingestion_time_utc: ingest.map(t),
            device_id: "d".into(),
            patient_id: None,
            encounter_id: None,
            correlation_id: None,
            properties: props
                .iter()
                .map(|(n, v)| MeasurementProperty {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn dedup_keeps_latest_ingestion_first_on_ties() {
        let kept = dedup_by_occurrence(vec![
            m(
                "2020-01-01T00:00:00Z",
                Some("2020-01-01T01:00:00Z"),
                &[("a", "1")],
            ),
            m(
                "2020-01-01T00:00:00Z",
                Some("2020-01-01T01:00:01Z"),
                &[("a", "2")],
            ),
            m("2020-01-01T00:01:00Z", None, &[("a", "3")]),
            m(
                "2020-01-01T00:00:00Z",
                Some("2020-01-01T01:00:01Z"),
                &[("a", "4")],
            ),
            m("2020-01-01T00:01:00Z", None, &[("a", "5")]),
        ]);
        let values: Vec<&str> = kept
            .iter()
            .map(|m| m.properties[0].value.as_str())
            .collect();
        assert_eq!(values, ["2", "3"]);
    }

    #[test]
    fn values_sorted_and_first_wins_per_instant() {
        let w = Window {
            start: t("2020-01-01T00:00:00Z"),
            end: t("2020-01-01T00:59:59.9999999Z"),
            interval: PeriodInterval::Hourly,
        };
        let g = ObservationGroup::from_measurements(
            w,
            vec![
                m("2020-01-01T00:02:00Z", None, &[("a", "1"), ("b", "x")]),
                m("2020-01-01T00:01:00Z", None, &[("a", "2"), ("a", "3")]),
            ],
        )
        .unwrap();
        let a: Vec<&str> = g
            .values("a")
            .unwrap()
            .iter()
            .map(|v| v.value.as_str())
            .collect();
        assert_eq!(a, ["2", "1"]);
        assert_eq!(g.properties[0].name, "a");
        assert_eq!(g.id_segment(false), "20200101000000Z.20200101005959Z");
        assert_eq!(g.id_segment(true), "20200101000000000Z.20200101005959999Z");
        assert!(g.values("A").is_none());
    }

    #[test]
    fn names_repeated_in_the_first_measurement_are_folded() {
        let w = Window {
            start: t("2020-01-01T00:00:00Z"),
            end: t("2020-01-01T00:59:59.9999999Z"),
            interval: PeriodInterval::Hourly,
        };
        let g = ObservationGroup::from_measurements(
            w,
            vec![
                m(
                    "2020-01-01T00:02:00Z",
                    None,
                    &[("a", "1"), ("b", "x"), ("a", "2"), ("c", "y"), ("b", "z")],
                ),
                m("2020-01-01T00:01:00Z", None, &[("a", "0")]),
            ],
        )
        .unwrap();
        let names: Vec<&str> = g.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let values = |name| -> Vec<&str> {
            g.values(name)
                .unwrap()
                .iter()
                .map(|v| v.value.as_str())
                .collect()
        };
        assert_eq!(values("a"), ["0", "1"]);
        assert_eq!(values("b"), ["x"]);
        assert_eq!(values("c"), ["y"]);
    }

    #[test]
    fn instant_and_correlation_segments() {
        let at = t("2020-01-01T00:00:01.25Z");
        let single = Window {
            start: at,
            end: at,
            interval: PeriodInterval::Single,
        };
        let mut one = m("2020-01-01T00:00:01.25Z", None, &[("a", "1")]);
        one.correlation_id = Some("corr-7".into());
        let g = ObservationGroup::from_measurements(single, vec![one.clone()]).unwrap();
        assert_eq!(g.id_segment(false), "20200101000001Z.20200101000001Z");
        assert_eq!(g.id_segment(true), "20200101000001250Z.20200101000001250Z");
        let correlation = Window {
            interval: PeriodInterval::CorrelationId,
            ..single
        };
        let g = ObservationGroup::from_measurements(correlation, vec![one]).unwrap();
        assert_eq!(g.id_segment(false), "corr-7");
    }
}
