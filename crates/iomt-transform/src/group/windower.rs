//! The streaming windower: a pure state machine that assigns measurements to observation
//! windows and releases each window as an [`ObservationGroup`] when the caller says its time is
//! over.
//!
//! # Contract
//! * **Event time only.** A measurement's window is computed from its `OccurrenceTimeUtc` and
//!   its template's [`WindowSpec`]; arrival order and the wall clock play no part. The windower
//!   never reads a clock: the caller passes a *watermark* — an instant before which it expects no
//!   more measurements — to [`Windower::flush_until`], or flushes everything with
//!   [`Windower::flush_all`] (e.g. at the end of a batch, as the original does).
//! * `flush_until(w)` releases exactly the windows whose last instant is before `w`
//!   (`end < w`). A correlation-id window's end is the latest time seen so far, so it is
//!   released once the watermark passes its latest measurement; measurements arriving later open
//!   a new window with the same identity, which the persist stage merges into the same
//!   Observation — how the original behaves across batches.
//! * Late measurements (for a window already released) open a fresh window and are released by
//!   the next flush; merging makes the result the same as if they had been on time.
//! * Groups are released in window creation order. Within a window the rules of
//!   [`ObservationGroup`] apply (de-duplication by occurrence time, first value wins per instant).
//! * A measurement that cannot be windowed (no template for its type, or a correlation-id
//!   template and no correlation id) is handed back with the error in [`Rejected`], so the caller
//!   can dead-letter it; the windower's state is unchanged.
//!
//! # Why this shape
//! Windowing is the only stage with state across messages. Keeping it a synchronous state
//! machine (`push` / `flush_until`) lets the service drive it from one task, and tests and the
//! conformance suite drive it with fixed watermarks — no timers, no sleeping.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use foldhash::fast::RandomState;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use iomt_model::Measurement;

use super::key::{KeyFields, key_hash};
use super::observation_group::{ObservationGroup, dedup_by_occurrence};
use super::window::{PeriodInterval, Window, WindowSpec};
use crate::error::TransformError;
use crate::time::{from_ticks, ticks};

/// Where the windower gets the [`WindowSpec`] of a measurement type: the FHIR templates, or one
/// fixed spec for every type.
pub trait WindowSpecSource {
    /// The spec for measurements of `type_name`.
    ///
    /// # Errors
    /// [`TransformError::TemplateNotFound`] when no template handles the type.
    fn window_spec(&self, type_name: &str) -> Result<WindowSpec, TransformError>;
}

impl WindowSpecSource for WindowSpec {
    fn window_spec(&self, _type_name: &str) -> Result<WindowSpec, TransformError> {
        Ok(*self)
    }
}

impl<T: WindowSpecSource + ?Sized> WindowSpecSource for Arc<T> {
    fn window_spec(&self, type_name: &str) -> Result<WindowSpec, TransformError> {
        (**self).window_spec(type_name)
    }
}

impl<T: WindowSpecSource + ?Sized> WindowSpecSource for &T {
    fn window_spec(&self, type_name: &str) -> Result<WindowSpec, TransformError> {
        (**self).window_spec(type_name)
    }
}

/// A measurement the windower could not place, handed back with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The measurement, unchanged.
    pub measurement: Measurement,
    /// Why it was rejected.
    pub error: TransformError,
}

/// Idle keys (no open window) are forgotten once there are more than this many.
const IDLE_KEY_LIMIT: usize = 4096;

struct KeyState {
    hash: u64,
    fields: KeyFields,
    spec: WindowSpec,
    epoch: u64,
    /// Open windows by (start, interval).
    windows: HashMap<(i64, PeriodInterval), usize, RandomState>,
}

struct WindowState {
    key: usize,
    start: i64,
    end: i64,
    interval: PeriodInterval,
    seq: u64,
    measurements: Bucket,
}

/// A window's measurements; most instant windows hold one, which needs no allocation.
enum Bucket {
    One(Measurement),
    Many(Vec<Measurement>),
}

impl Bucket {
    fn push(&mut self, m: Measurement) {
        match self {
            Bucket::Many(v) => v.push(m),
            Bucket::One(_) => {
                let Bucket::One(first) = std::mem::replace(self, Bucket::Many(Vec::new())) else {
                    return;
                };
                *self = Bucket::Many(vec![first, m]);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Bucket::One(_) => 1,
            Bucket::Many(v) => v.len(),
        }
    }
}

/// The streaming windower (see the module docs for its contract).
pub struct Windower<S> {
    source: S,
    epoch: u64,
    hasher: RandomState,
    key_index: HashMap<u64, usize, RandomState>,
    collisions: Vec<usize>,
    keys: Vec<Option<KeyState>>,
    free_keys: Vec<usize>,
    idle_keys: usize,
    windows: Vec<Option<WindowState>>,
    free_windows: Vec<usize>,
    /// Open windows by end, earliest first. Entries are not removed when a correlation window's
    /// end moves: a stale entry (end or seq no longer matching its slot) is skipped when popped.
    by_end: BinaryHeap<Reverse<(i64, u64, usize)>>,
    open: usize,
    next_seq: u64,
    buffered: usize,
    /// Scratch list of the windows a flush releases, kept to reuse its allocation.
    due: Vec<(u64, usize)>,
}

impl<S: WindowSpecSource> Windower<S> {
    /// A windower taking each type's spec from `source`.
    pub fn new(source: S) -> Self {
        Windower {
            source,
            epoch: 0,
            hasher: RandomState::default(),
            key_index: HashMap::default(),
            collisions: Vec::new(),
            keys: Vec::new(),
            free_keys: Vec::new(),
            idle_keys: 0,
            windows: Vec::new(),
            free_windows: Vec::new(),
            by_end: BinaryHeap::new(),
            open: 0,
            next_seq: 0,
            buffered: 0,
            due: Vec::new(),
        }
    }

    /// Replaces the spec source (e.g. after the FHIR mapping was reloaded). Open windows keep
    /// their bounds; measurements pushed from now on use the new specs.
    pub fn set_source(&mut self, source: S) {
        self.source = source;
        self.epoch += 1;
    }

    /// How many windows are open.
    pub fn open_windows(&self) -> usize {
        self.open
    }

    /// How many measurements are buffered in open windows (duplicates included).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The earliest end among open windows: a watermark after it releases at least one window.
    pub fn next_close(&mut self) -> Option<DateTime<Utc>> {
        self.drop_stale_top();
        self.by_end
            .peek()
            .map(|Reverse((end, _, _))| from_ticks(*end))
    }

    fn is_live(&self, (end, seq, slot): (i64, u64, usize)) -> bool {
        self.windows
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|w| w.seq == seq && w.end == end)
    }

    fn drop_stale_top(&mut self) {
        while let Some(&Reverse(top)) = self.by_end.peek() {
            if self.is_live(top) {
                break;
            }
            self.by_end.pop();
        }
    }

    fn find_key(&self, hash: u64, m: &Measurement) -> Option<usize> {
        if let Some(&slot) = self.key_index.get(&hash)
            && let Some(k) = &self.keys[slot]
            && k.fields.matches(m)
        {
            return Some(slot);
        }
        self.collisions.iter().copied().find(|&slot| {
            self.keys[slot]
                .as_ref()
                .is_some_and(|k| k.hash == hash && k.fields.matches(m))
        })
    }

    fn resolve(&self, m: &Measurement) -> Result<WindowSpec, TransformError> {
        let spec = self.source.window_spec(&m.type_name)?;
        if spec.interval == PeriodInterval::CorrelationId
            && m.correlation_id
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
        {
            return Err(TransformError::CorrelationIdNotDefined {
                type_name: m.type_name.clone(),
            });
        }
        Ok(spec)
    }

    /// Adds a measurement to its window, opening the window if needed.
    ///
    /// # Errors
    /// The measurement is handed back in [`Rejected`] when its type has no template, or its
    /// template groups by correlation id and it has none.
    pub fn push(&mut self, m: Measurement) -> Result<(), Box<Rejected>> {
        let hash = key_hash(&self.hasher, &m);
        let key = match self.find_key(hash, &m) {
            Some(slot) => {
                let stale = self.keys[slot]
                    .as_ref()
                    .is_some_and(|k| k.epoch != self.epoch);
                if stale {
                    match self.resolve(&m) {
                        Ok(spec) => {
                            if let Some(k) = self.keys[slot].as_mut() {
                                k.spec = spec;
                                k.epoch = self.epoch;
                            }
                        }
                        Err(error) => {
                            return Err(Box::new(Rejected {
                                measurement: m,
                                error,
                            }));
                        }
                    }
                }
                slot
            }
            None => {
                let spec = match self.resolve(&m) {
                    Ok(spec) => spec,
                    Err(error) => {
                        return Err(Box::new(Rejected {
                            measurement: m,
                            error,
                        }));
                    }
                };
                self.insert_key(hash, &m, spec)
            }
        };
        let Some(key_state) = self.keys[key].as_mut() else {
            return Ok(());
        };
        let spec = key_state.spec;
        let t = ticks(m.occurrence_time_utc);
        let (start, end) = spec.bounds_ticks(t);
        let window_key = match spec.interval {
            PeriodInterval::CorrelationId => (i64::MIN, PeriodInterval::CorrelationId),
            interval => (start, interval),
        };
        self.buffered += 1;
        if let Some(&slot) = key_state.windows.get(&window_key) {
            if let Some(w) = self.windows[slot].as_mut() {
                if spec.interval == PeriodInterval::CorrelationId && (t < w.start || t > w.end) {
                    w.start = w.start.min(t);
                    if t > w.end {
                        w.end = t;
                        self.by_end.push(Reverse((w.end, w.seq, slot)));
                    }
                }
                w.measurements.push(m);
            }
            return Ok(());
        }
        if key_state.windows.is_empty() {
            self.idle_keys = self.idle_keys.saturating_sub(1);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let state = WindowState {
            key,
            start,
            end,
            interval: spec.interval,
            seq,
            measurements: Bucket::One(m),
        };
        let slot = match self.free_windows.pop() {
            Some(slot) => {
                self.windows[slot] = Some(state);
                slot
            }
            None => {
                self.windows.push(Some(state));
                self.windows.len() - 1
            }
        };
        key_state.windows.insert(window_key, slot);
        self.by_end.push(Reverse((end, seq, slot)));
        self.open += 1;
        Ok(())
    }

    fn insert_key(&mut self, hash: u64, m: &Measurement, spec: WindowSpec) -> usize {
        let state = KeyState {
            hash,
            fields: KeyFields::of(m),
            spec,
            epoch: self.epoch,
            windows: HashMap::default(),
        };
        let slot = match self.free_keys.pop() {
            Some(slot) => {
                self.keys[slot] = Some(state);
                slot
            }
            None => {
                self.keys.push(Some(state));
                self.keys.len() - 1
            }
        };
        // A new key starts idle until its first window is inserted by `push`.
        self.idle_keys += 1;
        match self.key_index.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.collisions.push(slot),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
        slot
    }

    /// Releases the window in `slot`. `forget_in_key` removes it from its key's open windows;
    /// a flush of every window clears those maps wholesale instead.
    fn take_window(&mut self, slot: usize, forget_in_key: bool) -> Option<ObservationGroup> {
        let w = self.windows[slot].take()?;
        self.free_windows.push(slot);
        self.open = self.open.saturating_sub(1);
        self.buffered = self.buffered.saturating_sub(w.measurements.len());
        if forget_in_key && let Some(k) = self.keys[w.key].as_mut() {
            let window_key = match w.interval {
                PeriodInterval::CorrelationId => (i64::MIN, PeriodInterval::CorrelationId),
                interval => (w.start, interval),
            };
            k.windows.remove(&window_key);
            if k.windows.is_empty() {
                self.idle_keys += 1;
            }
        }
        let start = match &w.measurements {
            // An instant window's start is its measurement's time, when that is tick-exact:
            // no need to rebuild it from ticks.
            Bucket::One(m)
                if w.interval == PeriodInterval::Single
                    && m.occurrence_time_utc.timestamp_subsec_nanos() % 100 == 0
                    && ticks(m.occurrence_time_utc) == w.start =>
            {
                m.occurrence_time_utc
            }
            _ => from_ticks(w.start),
        };
        let window = Window {
            start,
            end: if w.end == w.start {
                start
            } else {
                from_ticks(w.end)
            },
            interval: w.interval,
        };
        match w.measurements {
            Bucket::One(m) => ObservationGroup::from_iter(window, std::iter::once(m)),
            Bucket::Many(v) => ObservationGroup::from_iter(window, dedup_by_occurrence(v)),
        }
    }

    fn sweep_idle_keys(&mut self) {
        if self.idle_keys <= IDLE_KEY_LIMIT {
            return;
        }
        for slot in 0..self.keys.len() {
            let idle = self.keys[slot]
                .as_ref()
                .is_some_and(|k| k.windows.is_empty());
            if !idle {
                continue;
            }
            if let Some(k) = self.keys[slot].take() {
                if self.key_index.get(&k.hash) == Some(&slot) {
                    self.key_index.remove(&k.hash);
                    // Promote a colliding key with the same hash, if any.
                    if let Some(pos) = self
                        .collisions
                        .iter()
                        .position(|&c| self.keys[c].as_ref().is_some_and(|o| o.hash == k.hash))
                    {
                        let other = self.collisions.swap_remove(pos);
                        self.key_index.insert(k.hash, other);
                    }
                } else if let Some(pos) = self.collisions.iter().position(|&c| c == slot) {
                    self.collisions.swap_remove(pos);
                }
                self.free_keys.push(slot);
            }
        }
        self.idle_keys = 0;
    }

    /// Releases every window whose last instant is before `watermark`, in window creation
    /// order.
    pub fn flush_until(&mut self, watermark: DateTime<Utc>) -> Vec<ObservationGroup> {
        let mut out = Vec::new();
        self.flush_until_into(watermark, &mut out);
        out
    }

    /// [`flush_until`](Self::flush_until), appending to `out` (reuses its allocation).
    pub fn flush_until_into(&mut self, watermark: DateTime<Utc>, out: &mut Vec<ObservationGroup>) {
        self.flush_below(ticks(watermark), out);
    }

    /// Releases every open window, in window creation order.
    pub fn flush_all(&mut self) -> Vec<ObservationGroup> {
        let mut out = Vec::new();
        self.flush_below(i64::MAX, &mut out);
        out
    }

    fn flush_below(&mut self, watermark: i64, out: &mut Vec<ObservationGroup>) {
        // The heap and the scratch list keep their allocations from flush to flush.
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        let everything = watermark == i64::MAX;
        if everything {
            // Every open window goes: list them from their slots, no need for the heap's order
            // (or for telling its stale entries apart).
            self.by_end.clear();
            due.reserve(self.open);
            due.extend(
                self.windows
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, w)| w.as_ref().map(|w| (w.seq, slot))),
            );
        }
        while let Some(&Reverse(top)) = self.by_end.peek() {
            if top.0 >= watermark {
                break;
            }
            self.by_end.pop();
            if self.is_live(top) {
                due.push((top.1, top.2));
            }
        }
        self.drop_stale_top();
        due.sort_unstable_by_key(|(seq, _)| *seq);
        out.reserve(due.len());
        for &(_, slot) in &due {
            if let Some(group) = self.take_window(slot, !everything) {
                out.push(group);
            }
        }
        if everything {
            // No window is open any more: every key is idle.
            for k in self.keys.iter_mut().flatten() {
                if !k.windows.is_empty() {
                    k.windows.clear();
                    self.idle_keys += 1;
                }
            }
        }
        self.due = due;
        self.sweep_idle_keys();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iomt_model::MeasurementProperty;

    fn t(s: &str) -> DateTime<Utc> {
        iomt_model::timestamp::parse(s).unwrap()
    }

    fn m(device: &str, time: &str, value: &str) -> Measurement {
        Measurement {
            type_name: "hr".into(),
            occurrence_time_utc: t(time),
            ingestion_time_utc: None,
            device_id: device.into(),
            patient_id: Some("p".into()),
            encounter_id: None,
            correlation_id: None,
            properties: vec![MeasurementProperty {
                name: "hr".into(),
                value: value.into(),
            }],
        }
    }

    #[test]
    fn hourly_windows_release_on_watermark() {
        let mut w = Windower::new(WindowSpec::new(PeriodInterval::Hourly));
        w.push(m("a", "2020-01-01T00:10:00Z", "1")).unwrap();
        w.push(m("b", "2020-01-01T00:20:00Z", "2")).unwrap();
        w.push(m("a", "2020-01-01T01:10:00Z", "3")).unwrap();
        w.push(m("a", "2020-01-01T00:05:00Z", "4")).unwrap();
        assert_eq!(w.open_windows(), 3);
        assert_eq!(w.buffered(), 4);
        assert_eq!(w.next_close(), Some(t("2020-01-01T00:59:59.9999999Z")));
        assert!(w.flush_until(t("2020-01-01T00:59:59.9999999Z")).is_empty());
        let groups = w.flush_until(t("2020-01-01T01:00:00Z"));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].device_id, "a");
        let a: Vec<&str> = groups[0]
            .values("hr")
            .unwrap()
            .iter()
            .map(|v| v.value.as_str())
            .collect();
        assert_eq!(a, ["4", "1"]);
        assert_eq!(groups[1].device_id, "b");
        let rest = w.flush_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(w.open_windows(), 0);
        assert_eq!(w.buffered(), 0);
    }

    #[test]
    fn correlation_windows_grow_and_require_an_id() {
        let mut w = Windower::new(WindowSpec::new(PeriodInterval::CorrelationId));
        let err = w.push(m("a", "2020-01-01T00:10:00Z", "1")).unwrap_err();
        assert_eq!(
            err.error.class(),
            iomt_model::ErrorClass::CorrelationIdNotDefinedException
        );
        let with_id = |time: &str| {
            let mut x = m("a", time, "1");
            x.correlation_id = Some("c1".into());
            x
        };
        w.push(with_id("2020-01-01T00:10:00Z")).unwrap();
        w.push(with_id("2020-01-01T00:05:00Z")).unwrap();
        w.push(with_id("2020-01-02T00:00:00Z")).unwrap();
        assert_eq!(w.open_windows(), 1);
        assert!(w.flush_until(t("2020-01-02T00:00:00Z")).is_empty());
        let g = w.flush_until(t("2020-01-02T00:00:00.0000001Z"));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].window.start, t("2020-01-01T00:05:00Z"));
        assert_eq!(g[0].window.end, t("2020-01-02T00:00:00Z"));
        assert_eq!(g[0].id_segment(false), "c1");
    }

    #[test]
    fn idle_keys_are_swept() {
        let mut w = Windower::new(WindowSpec::new(PeriodInterval::Single));
        for i in 0..(IDLE_KEY_LIMIT + 10) {
            w.push(m(&format!("d{i}"), "2020-01-01T00:00:00Z", "1"))
                .unwrap();
        }
        assert_eq!(w.flush_all().len(), IDLE_KEY_LIMIT + 10);
        assert!(w.key_index.is_empty());
        w.push(m("d1", "2020-01-01T00:00:00Z", "1")).unwrap();
        assert_eq!(w.flush_all().len(), 1);
    }
}
