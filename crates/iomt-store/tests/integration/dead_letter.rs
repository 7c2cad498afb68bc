//! The dead-letter store: round trip, filters, paging, purge, remove, durability.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use iomt_store::{
    DeadLetter, DeadLetterFilter, DeadLetterStore, LocalFhirStore, LocalStoreConfig, NewDeadLetter,
    Stage, StoreError,
};
use tempfile::TempDir;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn entry(class: &str, stage: Stage, occurred_at: DateTime<Utc>, payload: &[u8]) -> NewDeadLetter {
    NewDeadLetter {
        class: class.into(),
        stage,
        reason: format!("{class} happened"),
        occurred_at,
        device_id: Some("wristband-0001".into()),
        retryable: false,
        source: "mqtt:devices/+/telemetry".into(),
        log_offset: Some(42),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-seq".into(), "7".into()),
        ],
        payload: payload.to_vec(),
    }
}

fn open(dir: &TempDir) -> DeadLetterStore {
    DeadLetterStore::open(&dir.path().join("dead-letters.db")).unwrap()
}

fn matches(stored: &DeadLetter, new: &NewDeadLetter) {
    assert_eq!(stored.class, new.class);
    assert_eq!(stored.stage, new.stage);
    assert_eq!(stored.reason, new.reason);
    assert_eq!(stored.occurred_at, new.occurred_at);
    assert_eq!(stored.device_id, new.device_id);
    assert_eq!(stored.retryable, new.retryable);
    assert_eq!(stored.source, new.source);
    assert_eq!(stored.log_offset, new.log_offset);
    assert_eq!(stored.headers, new.headers);
    assert_eq!(stored.payload, new.payload);
    assert_eq!(stored.redrive_count, 0);
}

#[test]
fn round_trip_keeps_every_field() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut binary = entry(
        "InvalidJsonException",
        Stage::Ingest,
        at("2026-11-26T08:00:00.123456Z"),
        b"\x00\xffnot json",
    );
    binary.device_id = None;
    binary.retryable = true;
    binary.log_offset = Some(u64::MAX);
    binary.headers.clear();
    let plain = entry(
        "FhirResourceNotFoundException",
        Stage::Persist,
        at("2026-11-26T08:00:01Z"),
        br#"{"deviceId":"wristband-0001","heartRate":72}"#,
    );
    let mut no_offset = plain.clone();
    no_offset.log_offset = None;
    let entries = [binary, plain, no_offset];
    let ids = store.put(&entries).unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    for (id, new) in ids.iter().zip(&entries) {
        let stored = store.get(*id).unwrap().expect("stored");
        assert_eq!(stored.id, *id);
        matches(&stored, new);
    }
    assert_eq!(store.get(ids[2] + 1).unwrap(), None);
    assert_eq!(store.put(&[]).unwrap(), Vec::<i64>::new());

    let listed = store.list(&DeadLetterFilter::default()).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].payload_bytes, 10);
    assert_eq!(listed[1].class, "FhirResourceNotFoundException");
    assert_eq!(listed[1].source, "mqtt:devices/+/telemetry");
    assert_eq!(listed[1].device_id.as_deref(), Some("wristband-0001"));
    assert!(listed[0].retryable && !listed[1].retryable);
}

#[test]
fn filters_by_class_stage_time_and_pages() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let start = at("2026-11-26T08:00:00Z");
    let mut entries = Vec::new();
    for i in 0..30i64 {
        let (class, stage) = match i % 3 {
            0 => ("InvalidJsonException", Stage::Ingest),
            1 => ("IncompatibleDataException", Stage::Normalize),
            _ => ("FhirResourceNotFoundException", Stage::Persist),
        };
        entries.push(entry(class, stage, start + TimeDelta::minutes(i), b"{}"));
    }
    let ids = store.put(&entries).unwrap();

    let by_class = store
        .list(&DeadLetterFilter {
            class: Some("IncompatibleDataException".into()),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(by_class.len(), 10);
    assert!(
        by_class
            .iter()
            .all(|s| s.class == "IncompatibleDataException")
    );
    assert!(by_class.iter().all(|s| s.stage == Stage::Normalize));

    let by_stage = store
        .list(&DeadLetterFilter {
            stage: Some(Stage::Persist),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(by_stage.len(), 10);
    assert!(by_stage.iter().all(|s| s.stage == Stage::Persist));
    assert!(
        store
            .list(&DeadLetterFilter {
                stage: Some(Stage::Group),
                ..DeadLetterFilter::default()
            })
            .unwrap()
            .is_empty()
    );

    // since inclusive, until exclusive: minutes 5..10.
    let window = store
        .list(&DeadLetterFilter {
            since: Some(start + TimeDelta::minutes(5)),
            until: Some(start + TimeDelta::minutes(10)),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    let minutes: Vec<i64> = window
        .iter()
        .map(|s| (s.occurred_at - start).num_minutes())
        .collect();
    assert_eq!(minutes, [5, 6, 7, 8, 9]);

    // Filters combine.
    let combined = store
        .list(&DeadLetterFilter {
            class: Some("InvalidJsonException".into()),
            since: Some(start + TimeDelta::minutes(10)),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    let minutes: Vec<i64> = combined
        .iter()
        .map(|s| (s.occurred_at - start).num_minutes())
        .collect();
    assert_eq!(minutes, [12, 15, 18, 21, 24, 27]);

    // Paging with after_id sees every entry once, in id order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&DeadLetterFilter {
                after_id: after,
                limit: Some(7),
                ..DeadLetterFilter::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().map(|s| s.id);
        seen.extend(page.into_iter().map(|s| s.id));
    }
    assert_eq!(seen, ids);

    // Paging within a class.
    let page = store
        .list(&DeadLetterFilter {
            class: Some("FhirResourceNotFoundException".into()),
            after_id: Some(ids[10]),
            limit: Some(2),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(
        page.iter().map(|s| s.id).collect::<Vec<_>>(),
        [ids[11], ids[14]]
    );

    let counts = store.counts().unwrap();
    assert_eq!(
        counts,
        [
            (
                "FhirResourceNotFoundException".to_owned(),
                Stage::Persist,
                10
            ),
            ("IncompatibleDataException".to_owned(), Stage::Normalize, 10),
            ("InvalidJsonException".to_owned(), Stage::Ingest, 10),
        ]
    );
}

#[test]
fn purge_deletes_what_the_filter_matches() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let start = at("2026-11-26T08:00:00Z");
    let entries: Vec<NewDeadLetter> = (0..10)
        .map(|i| {
            let class = if i < 6 {
                "InvalidJsonException"
            } else {
                "NotSupportedException"
            };
            entry(
                class,
                Stage::Ingest,
                start + TimeDelta::hours(i),
                &[b'x'; 1000],
            )
        })
        .collect();
    let ids = store.put(&entries).unwrap();

    // Older than 2 hours after start, one class.
    let purged = store
        .purge(&DeadLetterFilter {
            class: Some("InvalidJsonException".into()),
            until: Some(start + TimeDelta::hours(2)),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(purged, 2);
    assert_eq!(store.get(ids[0]).unwrap(), None);
    assert_eq!(store.get(ids[1]).unwrap(), None);
    assert!(store.get(ids[2]).unwrap().is_some());

    // With a limit: the first ones in id order.
    let purged = store
        .purge(&DeadLetterFilter {
            class: Some("NotSupportedException".into()),
            limit: Some(3),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!(purged, 3);
    let left: Vec<i64> = store
        .list(&DeadLetterFilter::default())
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [ids[2], ids[3], ids[4], ids[5], ids[9]]);

    assert_eq!(store.purge(&DeadLetterFilter::default()).unwrap(), 5);
    assert!(store.list(&DeadLetterFilter::default()).unwrap().is_empty());
    assert!(store.counts().unwrap().is_empty());
}

#[test]
fn remove_and_redrive_counts() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let now = at("2026-11-26T08:00:00Z");
    let ids = store
        .put(&[
            entry("A", Stage::Transform, now, b"1"),
            entry("A", Stage::Transform, now, b"2"),
            entry("A", Stage::Transform, now, b"3"),
        ])
        .unwrap();
    assert_eq!(store.mark_redriven(&[ids[1], ids[1], ids[2]]).unwrap(), 3);
    assert_eq!(store.get(ids[1]).unwrap().unwrap().redrive_count, 2);
    assert_eq!(
        store.list(&DeadLetterFilter::default()).unwrap()[2].redrive_count,
        1
    );

    assert_eq!(store.remove(&[ids[0], ids[2], ids[2] + 100]).unwrap(), 2);
    assert_eq!(store.remove(&[ids[0]]).unwrap(), 0);
    assert_eq!(store.remove(&[]).unwrap(), 0);
    let left: Vec<i64> = store
        .list(&DeadLetterFilter::default())
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [ids[1]]);

    // Ids are never reused, even for the highest one removed.
    let next = store.put(&[entry("A", Stage::Group, now, b"4")]).unwrap();
    assert!(next[0] > ids[2], "{next:?} after {ids:?}");
}

#[test]
fn entries_survive_reopening() {
    let dir = TempDir::new().unwrap();
    let new = entry(
        "TemplateNotFoundException",
        Stage::Transform,
        at("2026-11-26T08:00:00.5Z"),
        b"[{\"Type\":\"hr\"}]",
    );
    let ids = {
        let store = open(&dir);
        let ids = store.put(std::slice::from_ref(&new)).unwrap();
        store.put(std::slice::from_ref(&new)).unwrap();
        store.remove(&ids).unwrap();
        ids
    };
    let store = open(&dir);
    let listed = store.list(&DeadLetterFilter::default()).unwrap();
    assert_eq!(listed.len(), 1);
    matches(&store.get(listed[0].id).unwrap().unwrap(), &new);
    let next = store.put(&[new]).unwrap();
    assert!(next[0] > listed[0].id && next[0] > ids[0]);
}

#[test]
fn puts_from_many_threads_get_distinct_ids() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(&dir));
    let now = at("2026-11-26T08:00:00Z");
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let payload = format!("{t}-{i}");
                    ids.extend(
                        store
                            .put(&[entry("A", Stage::Ingest, now, payload.as_bytes())])
                            .unwrap(),
                    );
                }
                ids
            })
        })
        .collect();
    let mut ids: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert_eq!(
        store.counts().unwrap(),
        [("A".to_owned(), Stage::Ingest, 100)]
    );
}

#[test]
fn refuses_files_of_other_kinds() {
    let dir = TempDir::new().unwrap();
    let dead_letters = dir.path().join("dead-letters.db");
    drop(DeadLetterStore::open(&dead_letters).unwrap());
    let err = LocalFhirStore::open(&dead_letters, LocalStoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::WrongFile { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("is not an iomt local fhir store: give each store its own file"),
        "{err}"
    );

    // Someone else's SQLite file is left alone.
    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    drop(conn);
    let err = DeadLetterStore::open(&other).unwrap_err();
    assert!(matches!(err, StoreError::WrongFile { .. }), "{err:?}");
    let err = LocalFhirStore::open(&other, LocalStoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::WrongFile { .. }), "{err:?}");

    // So is a newer iomt's.
    let newer = dir.path().join("newer.db");
    drop(DeadLetterStore::open(&newer).unwrap());
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = DeadLetterStore::open(&newer).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );

    // A directory cannot be a store.
    let err = DeadLetterStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.is_retryable());
}
