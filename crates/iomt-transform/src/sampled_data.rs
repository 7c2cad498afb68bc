//! The SampledData `data` string: one token per period slot, `E` for an empty slot.
//!
//! Behaviour of the original's `SampledDataProcessor` (SPEC §7.3, asserted by its unit tests):
//! * [`build`]: slots start at `start + k·period` while the slot start is `≤ end`; a slot holds
//!   the **last** value whose time `t` satisfies `slot ≤ t < slot + period`; empty slots are
//!   `E`; tokens are joined by one space and trailing white space is trimmed. Values must be
//!   sorted by time. A value earlier than the current slot stops consumption of every later
//!   value (the cursor never advances past it): this cannot happen with window groups, but the
//!   guard is kept so results match the original on any input.
//! * [`parse`]: split on `' '` (so `"1  2"` has an empty token), token `k` at
//!   `start + k·period`, `E` tokens dropped.
//! * [`merge`]: sorted merge; on equal times the **new** value wins.
//!
//! Periods are in milliseconds (the template's `defaultPeriod`, a decimal) and are applied the
//! way .NET 7+ `DateTime.AddMilliseconds(double)` does: whole milliseconds exactly, the fraction
//! truncated to 100 ns ticks.
//!
//! Building writes into one pre-sized `String` and runs of empty slots are copied in blocks,
//! because a full hour at one-second resolution (3600 slots) is rebuilt on every merge.

use chrono::{DateTime, Utc};

use crate::time::{TICKS_PER_MILLISECOND, from_ticks, ticks};

/// The most slots one data string may have. A day at 10 ms is 8.64 million slots; past this
/// limit building fails instead of allocating gigabytes for a misconfigured `defaultPeriod`.
pub const MAX_SLOTS: u64 = 50_000_000;

/// A sample period: the template's `defaultPeriod` in milliseconds, applied in .NET ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplePeriod {
    millis: f64,
    ticks: i64,
}

impl SamplePeriod {
    /// A period of `millis` milliseconds. `None` unless it is finite and at least one tick
    /// (0.0001 ms): the original loops forever on a zero period.
    pub fn from_millis(millis: f64) -> Option<SamplePeriod> {
        if !millis.is_finite() || millis <= 0.0 || millis > 1e15 {
            return None;
        }
        // AddMilliseconds(double): integral part exact, fraction truncated to ticks.
        let integral = millis.trunc();
        let fraction = millis - integral;
        let ticks = integral as i64 * TICKS_PER_MILLISECOND
            + (fraction * TICKS_PER_MILLISECOND as f64) as i64;
        (ticks > 0).then_some(SamplePeriod { millis, ticks })
    }

    /// The period in milliseconds, as configured.
    pub fn millis(self) -> f64 {
        self.millis
    }

    pub(crate) fn ticks(self) -> i64 {
        self.ticks
    }

    /// How many slots a data string over `[start, end]` has (0 when `end < start`).
    pub fn slots(self, start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
        slot_count(ticks(start), ticks(end), self.ticks)
    }
}

fn slot_count(start: i64, end: i64, period: i64) -> u64 {
    if end < start {
        0
    } else {
        ((end - start) / period) as u64 + 1
    }
}

/// A timed value borrowed from a group or a parsed data string, in ticks.
pub(crate) type Tick<'a> = (i64, &'a str);

const EMPTY_RUN: &str = "E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E ";

fn push_empty(out: &mut String, mut n: u64) {
    let per_block = (EMPTY_RUN.len() / 2) as u64;
    while n >= per_block {
        out.push_str(EMPTY_RUN);
        n -= per_block;
    }
    out.push_str(&EMPTY_RUN[..(n as usize) * 2]);
}

/// Builds into `out` (cleared first). The caller checks the slot limit.
pub(crate) fn build_ticks(
    out: &mut String,
    values: &[Tick<'_>],
    start: i64,
    end: i64,
    period: i64,
) {
    out.clear();
    let slots = slot_count(start, end, period);
    if slots == 0 {
        return;
    }
    let value_bytes: usize = values.iter().map(|v| v.1.len()).sum();
    out.reserve((slots as usize).saturating_mul(2) + value_bytes);
    let mut i = 0usize;
    let mut slot = 0u64;
    let mut current = start;
    while slot < slots {
        // Skip a run of empty slots in one go when the next value is further ahead.
        match values.get(i) {
            Some(&(t, _)) if t >= current => {
                let ahead = ((t - current) / period) as u64;
                let run = ahead.min(slots - slot);
                if run > 0 {
                    push_empty(out, run);
                    slot += run;
                    current += run as i64 * period;
                    continue;
                }
            }
            _ => {
                // No usable value left (exhausted, or stuck behind the cursor): the rest is empty.
                push_empty(out, slots - slot);
                break;
            }
        }
        let next = current + period;
        let mut value = None;
        while let Some(&(t, v)) = values.get(i) {
            if t >= current && t < next {
                value = Some(v);
                i += 1;
            } else {
                break;
            }
        }
        out.push_str(value.unwrap_or("E"));
        out.push(' ');
        slot += 1;
        current = next;
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
}

/// Builds the data string for time-sorted `values` over `[start, end]` (see the module docs).
/// `None` when it would exceed [`MAX_SLOTS`].
pub fn build<S: AsRef<str>>(
    values: &[(DateTime<Utc>, S)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    period: SamplePeriod,
) -> Option<String> {
    if period.slots(start, end) > MAX_SLOTS {
        return None;
    }
    let ticked: Vec<Tick<'_>> = values
        .iter()
        .map(|(t, v)| (ticks(*t), v.as_ref()))
        .collect();
    let mut out = String::new();
    build_ticks(&mut out, &ticked, ticks(start), ticks(end), period.ticks);
    Some(out)
}

/// Parses into `out` (appending).
pub(crate) fn parse_ticks<'a>(out: &mut Vec<Tick<'a>>, data: &'a str, start: i64, period: i64) {
    let mut time = start;
    for token in data.split(' ') {
        if token != "E" {
            out.push((time, token));
        }
        time = time.saturating_add(period);
    }
}

/// Reads a data string back into timed values (see the module docs).
pub fn parse(data: &str, start: DateTime<Utc>, period: SamplePeriod) -> Vec<(DateTime<Utc>, &str)> {
    let mut out = Vec::new();
    parse_ticks(&mut out, data, ticks(start), period.ticks);
    out.into_iter().map(|(t, v)| (from_ticks(t), v)).collect()
}

/// Merges two time-sorted sequences; on equal times the new value wins.
pub(crate) fn merge_ticks<'a>(existing: &[Tick<'a>], new: &[Tick<'a>], out: &mut Vec<Tick<'a>>) {
    out.reserve(existing.len() + new.len());
    let (mut e, mut n) = (0, 0);
    while e < existing.len() || n < new.len() {
        if e >= existing.len() {
            out.extend_from_slice(&new[n..]);
            break;
        }
        if n >= new.len() {
            out.extend_from_slice(&existing[e..]);
            break;
        }
        let (te, tn) = (existing[e].0, new[n].0);
        if te < tn {
            out.push(existing[e]);
            e += 1;
        } else if te > tn {
            out.push(new[n]);
            n += 1;
        } else {
            out.push(new[n]);
            e += 1;
            n += 1;
        }
    }
}

/// The data string that parsing `data`, merging `new` into it and rebuilding over the same
/// `[start, end]` gives, made by replacing only the tokens of the slots `new` falls in — when
/// that shortcut is exact. `None` when it may not be (then parse, merge and build):
/// * `data` must be canonical: exactly one non-empty token per slot, single spaces, no
///   leading or trailing space (what [`build_ticks`] writes when no value is empty);
/// * `new` must be time-sorted, inside the slots, and its values non-empty without spaces.
///
/// Why that is exact: every old token sits at its slot's start, the earliest instant of the
/// slot, and a new value at the same instant wins; so a slot with new values ends up holding
/// the last of them, and every other slot keeps its token (an old `E` is dropped by parsing
/// and written back as `E`). An hour of 1-second SampledData is 3,600 tokens; a merge of a few
/// seconds then copies the string once instead of parsing and rebuilding it.
pub(crate) fn splice_ticks(
    data: &str,
    new: &[Tick<'_>],
    start: i64,
    end: i64,
    period: i64,
) -> Option<String> {
    let slots = slot_count(start, end, period);
    if slots == 0 || slots > MAX_SLOTS || new.is_empty() {
        return None;
    }
    // The slot of each new value, last value per slot.
    let mut replacements: Vec<(u64, &str)> = Vec::with_capacity(new.len());
    let mut previous = i64::MIN;
    for &(t, v) in new {
        if t < previous || t < start || v.is_empty() || v.contains(' ') {
            return None;
        }
        previous = t;
        let slot = ((t - start) / period) as u64;
        if slot >= slots {
            return None;
        }
        match replacements.last_mut() {
            Some(last) if last.0 == slot => last.1 = v,
            _ => replacements.push((slot, v)),
        }
    }
    // Canonical: tokens separated by single spaces, none empty, one per slot. These folds
    // have no early exit, so they vectorize.
    let bytes = data.as_bytes();
    if bytes.first().is_none_or(|&b| b == b' ') || bytes.last() == Some(&b' ') {
        return None;
    }
    let spaces = count_spaces(bytes);
    let doubled = bytes
        .iter()
        .zip(&bytes[1..])
        .fold(false, |found, (&a, &b)| found | ((a == b' ') & (b == b' ')));
    if doubled || spaces + 1 != slots {
        return None;
    }
    let extra: usize = replacements.iter().map(|r| r.1.len()).sum();
    let mut out = String::with_capacity(data.len() + extra);
    let (mut copied, mut position, mut slot) = (0usize, 0usize, 0u64);
    for &(k, v) in &replacements {
        // The start of token k: past (k - slot) more spaces.
        position = skip_spaces(bytes, position, k - slot);
        slot = k;
        let end = bytes[position..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(bytes.len(), |p| position + p);
        out.push_str(&data[copied..position]);
        out.push_str(v);
        copied = end;
    }
    out.push_str(&data[copied..]);
    Some(out)
}

/// How many bytes of `bytes` are spaces. Counted in blocks of up to 255 bytes with a byte-wide
/// count, which vectorizes 16 or 32 bytes a step; a count in 64-bit lanes takes 4 bytes a step
/// (SSE2), and this is the loop a merge into an hour of SampledData spends its time in.
fn count_spaces(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|block| u64::from(block.iter().fold(0u8, |n, &b| n + u8::from(b == b' '))))
        .sum()
}

/// The index just past the `n`th space from `position` (`position` when `n` is 0); the caller
/// knows there are that many. Whole blocks are counted at once where they hold fewer.
fn skip_spaces(bytes: &[u8], mut position: usize, mut n: u64) -> usize {
    const BLOCK: usize = 64;
    while n > 0 {
        if let Some(block) = bytes.get(position..position + BLOCK) {
            let count = count_spaces(block);
            if count < n {
                n -= count;
                position += BLOCK;
                continue;
            }
        }
        if bytes[position] == b' ' {
            n -= 1;
        }
        position += 1;
    }
    position
}

/// Merges existing and new time-sorted values; on equal times the new value wins.
pub fn merge<'a>(
    existing: &[(DateTime<Utc>, &'a str)],
    new: &[(DateTime<Utc>, &'a str)],
) -> Vec<(DateTime<Utc>, &'a str)> {
    let e: Vec<Tick<'a>> = existing.iter().map(|(t, v)| (ticks(*t), *v)).collect();
    let n: Vec<Tick<'a>> = new.iter().map(|(t, v)| (ticks(*t), *v)).collect();
    let mut out = Vec::new();
    merge_ticks(&e, &n, &mut out);
    out.into_iter().map(|(t, v)| (from_ticks(t), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        iomt_model::timestamp::parse(s).unwrap()
    }

    fn secs(base: &str, values: &[(f64, &'static str)]) -> Vec<(DateTime<Utc>, &'static str)> {
        let b = ticks(t(base));
        values
            .iter()
            .map(|(s, v)| (from_ticks(b + (s * 1e7) as i64), *v))
            .collect()
    }

    #[test]
    fn builds_with_gaps_collisions_and_excess() {
        let p = SamplePeriod::from_millis(1000.0).unwrap();
        let start = t("2019-01-01T00:00:00Z");
        let v = secs(
            "2019-01-01T00:00:00Z",
            &[(0.0, "1"), (0.5, "2"), (2.0, "3"), (9.0, "4"), (10.0, "5")],
        );
        assert_eq!(
            build(&v, start, t("2019-01-01T00:00:09Z"), p).unwrap(),
            "2 E 3 E E E E E E 4"
        );
        assert_eq!(
            build(&v, start, t("2019-01-01T00:00:11Z"), p).unwrap(),
            "2 E 3 E E E E E E 4 5 E"
        );
        assert_eq!(build(&v, start, t("2018-01-01T00:00:00Z"), p).unwrap(), "");
        let empty: Vec<(DateTime<Utc>, &str)> = Vec::new();
        let hour = build(&empty, start, t("2019-01-01T00:59:59.9999999Z"), p).unwrap();
        assert_eq!(hour.len(), 3600 * 2 - 1);
    }

    #[test]
    fn value_before_cursor_blocks_later_values() {
        let p = SamplePeriod::from_millis(1000.0).unwrap();
        let v = secs("2019-01-01T00:00:00Z", &[(-1.0, "0"), (1.0, "1")]);
        assert_eq!(
            build(&v, t("2019-01-01T00:00:00Z"), t("2019-01-01T00:00:02Z"), p).unwrap(),
            "E E E"
        );
    }

    #[test]
    fn parse_keeps_empty_tokens_and_drops_e() {
        let p = SamplePeriod::from_millis(500.0).unwrap();
        let start = t("2019-01-01T00:00:00Z");
        let parsed = parse("1 E  3", start, p);
        assert_eq!(
            parsed,
            vec![
                (t("2019-01-01T00:00:00Z"), "1"),
                (t("2019-01-01T00:00:01Z"), ""),
                (t("2019-01-01T00:00:01.5Z"), "3"),
            ]
        );
    }

    #[test]
    fn periods_truncate_to_ticks() {
        assert_eq!(SamplePeriod::from_millis(0.00015).unwrap().ticks(), 1);
        assert!(SamplePeriod::from_millis(0.00001).is_none());
        assert!(SamplePeriod::from_millis(0.0).is_none());
        assert!(SamplePeriod::from_millis(-5.0).is_none());
        assert!(SamplePeriod::from_millis(f64::NAN).is_none());
        assert_eq!(
            SamplePeriod::from_millis(1000.5).unwrap().ticks(),
            10_005_000
        );
    }

    /// The full path the splice stands in for: parse, merge, build over the same slots.
    fn rebuilt(data: &str, new: &[Tick<'_>], start: i64, end: i64, period: i64) -> String {
        let mut old = Vec::new();
        parse_ticks(&mut old, data, start, period);
        let mut merged = Vec::new();
        merge_ticks(&old, new, &mut merged);
        let mut out = String::new();
        build_ticks(&mut out, &merged, start, end, period);
        out
    }

    #[test]
    fn splice_equals_rebuild_and_declines_what_it_cannot_do() {
        let (start, period) = (0i64, 10i64);
        let end = start + 9 * period;
        let data = "1 E 3 E E E E E E 10";
        let new = [(5, "a"), (12, "b"), (19, "c"), (90, "z")];
        let spliced = splice_ticks(data, &new, start, end, period).unwrap();
        assert_eq!(spliced, "a c 3 E E E E E E z");
        assert_eq!(spliced, rebuilt(data, &new, start, end, period));
        // Not canonical, not sorted, outside the slots, or values that would change tokens.
        assert!(splice_ticks("1  3 E E E E E E E E", &new, start, end, period).is_none());
        assert!(splice_ticks("1 E 3", &new, start, end, period).is_none());
        assert!(splice_ticks(&format!("{data} E"), &new, start, end, period).is_none());
        assert!(splice_ticks(data, &[(20, "a"), (10, "b")], start, end, period).is_none());
        assert!(splice_ticks(data, &[(100, "a")], start, end, period).is_none());
        assert!(splice_ticks(data, &[(-1, "a")], start, end, period).is_none());
        assert!(splice_ticks(data, &[(0, "a b")], start, end, period).is_none());
        assert!(splice_ticks(data, &[(0, "")], start, end, period).is_none());
        assert!(splice_ticks("", &[(0, "a")], start, end, period).is_none());
    }

    proptest::proptest! {
        #[test]
        fn splice_matches_parse_merge_build(
            // Up to ~1,600 bytes of data: past the 64-byte blocks `skip_spaces` counts at once
            // and the 255-byte blocks of `count_spaces`.
            old in proptest::collection::vec(proptest::option::of("[0-9]{1,3}"), 1..400),
            new in proptest::collection::vec((0i64..4_500, "[0-9E]{1,2}"), 1..12),
        ) {
            let (start, period) = (1_000i64, 10i64);
            let end = start + (old.len() as i64 - 1) * period + 3;
            let data: Vec<&str> = old.iter().map(|o| o.as_deref().unwrap_or("E")).collect();
            let data = data.join(" ");
            let mut new: Vec<(i64, String)> =
                new.into_iter().map(|(t, v)| (start + t, v)).collect();
            new.sort_by_key(|v| v.0);
            let new: Vec<Tick<'_>> = new.iter().map(|(t, v)| (*t, v.as_str())).collect();
            let fits = new.iter().all(|v| v.0 < start + old.len() as i64 * period);
            match splice_ticks(&data, &new, start, end, period) {
                Some(spliced) => {
                    proptest::prop_assert!(fits);
                    proptest::prop_assert_eq!(spliced, rebuilt(&data, &new, start, end, period));
                }
                None => proptest::prop_assert!(!fits),
            }
        }
    }

    #[test]
    fn spaces_are_counted_across_block_boundaries() {
        let text: Vec<u8> = (0..2_000u32)
            .map(|i| {
                if (i * 7 + i / 13) % 3 == 0 {
                    b' '
                } else {
                    b'7'
                }
            })
            .collect();
        for len in (0..300).chain([509, 510, 511, 764, 765, 766, 2_000]) {
            let bytes = &text[..len];
            let naive = bytes.iter().filter(|&&b| b == b' ').count() as u64;
            assert_eq!(count_spaces(bytes), naive, "length {len}");
        }
        let spaces = vec![b' '; 1_000];
        assert_eq!(count_spaces(&spaces), 1_000);
    }

    #[test]
    fn slot_limit() {
        let p = SamplePeriod::from_millis(0.001).unwrap();
        let empty: Vec<(DateTime<Utc>, &str)> = Vec::new();
        assert!(
            build(
                &empty,
                t("2019-01-01T00:00:00Z"),
                t("2019-01-02T00:00:00Z"),
                p
            )
            .is_none()
        );
    }
}
