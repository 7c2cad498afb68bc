//! The original's per-batch grouping (SPEC §6.1) and observation-group factory (§6.2), as pure
//! functions over one batch.
//!
//! The streaming [`Windower`](super::Windower) applies the same rules across batches; these
//! functions exist for callers that process closed batches (the mapping debugger, replays, the
//! conformance suite) and to state the rules in their simplest form:
//! 1. [`group_batch`]: group by key (device, type, patient, encounter, correlation id — exact),
//!    groups in first-appearance order; inside a group keep one measurement per distinct
//!    `OccurrenceTimeUtc`, the one with the greatest `IngestionTimeUtc` (ties: the first).
//! 2. [`MeasurementGroup::observation_groups`]: split a group into observation windows.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;

use iomt_model::Measurement;

use super::key::{key_hash, same_key};
use super::observation_group::{ObservationGroup, dedup_by_occurrence};
use super::window::{PeriodInterval, Window, WindowSpec};
use crate::error::TransformError;
use crate::time::{from_ticks, ticks};

/// The measurements of one key in one batch, de-duplicated by occurrence time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementGroup {
    /// The kept measurements, in first-appearance order of their occurrence times.
    pub measurements: Vec<Measurement>,
}

impl MeasurementGroup {
    /// The measurement type (from the first measurement).
    pub fn type_name(&self) -> &str {
        self.measurements
            .first()
            .map(|m| m.type_name.as_str())
            .unwrap_or_default()
    }

    /// The device id (from the first measurement).
    pub fn device_id(&self) -> &str {
        self.measurements
            .first()
            .map(|m| m.device_id.as_str())
            .unwrap_or_default()
    }

    /// Splits the group into observation groups by `spec` (SPEC §6.2): one per distinct window,
    /// in first-appearance order; a correlation-id spec gives one group spanning every
    /// measurement.
    ///
    /// # Errors
    /// [`TransformError::CorrelationIdNotDefined`] for a correlation-id spec when the group has
    /// no (or a blank) correlation id.
    pub fn observation_groups(
        self,
        spec: &WindowSpec,
    ) -> Result<Vec<ObservationGroup>, TransformError> {
        let Some(first) = self.measurements.first() else {
            return Ok(Vec::new());
        };
        if spec.interval == PeriodInterval::CorrelationId {
            if first
                .correlation_id
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
            {
                return Err(TransformError::CorrelationIdNotDefined {
                    type_name: first.type_name.clone(),
                });
            }
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            for m in &self.measurements {
                let t = ticks(m.occurrence_time_utc);
                lo = lo.min(t);
                hi = hi.max(t);
            }
            let window = Window {
                start: from_ticks(lo),
                end: from_ticks(hi),
                interval: PeriodInterval::CorrelationId,
            };
            return Ok(
                ObservationGroup::from_measurements(window, self.measurements)
                    .into_iter()
                    .collect(),
            );
        }
        let mut order: Vec<(i64, i64, Vec<Measurement>)> = Vec::new();
        let mut index: HashMap<i64, usize> = HashMap::new();
        for m in self.measurements {
            let (start, end) = spec.bounds_ticks(ticks(m.occurrence_time_utc));
            match index.get(&start) {
                Some(&i) => order[i].2.push(m),
                None => {
                    index.insert(start, order.len());
                    order.push((start, end, vec![m]));
                }
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|(start, end, ms)| {
                let window = Window {
                    start: from_ticks(start),
                    end: from_ticks(end),
                    interval: spec.interval,
                };
                ObservationGroup::from_measurements(window, ms)
            })
            .collect())
    }
}

/// Groups one batch of measurements by key and de-duplicates each group (see the module docs).
pub fn group_batch(measurements: impl IntoIterator<Item = Measurement>) -> Vec<MeasurementGroup> {
    let state = RandomState::new();
    let mut groups: Vec<Vec<Measurement>> = Vec::new();
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    for m in measurements {
        let h = key_hash(&state, &m);
        let slots = index.entry(h).or_default();
        match slots.iter().copied().find(|&i| same_key(&groups[i][0], &m)) {
            Some(i) => groups[i].push(m),
            None => {
                slots.push(groups.len());
                groups.push(vec![m]);
            }
        }
    }
    groups
        .into_iter()
        .map(|ms| MeasurementGroup {
            measurements: dedup_by_occurrence(ms),
        })
        .collect()
}
