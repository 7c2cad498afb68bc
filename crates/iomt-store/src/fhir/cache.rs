//! The Observation cache: recently written Observations, parsed, by identifier, bounded by
//! their size.
//!
//! A stream of groups for one hour or day merges into the same Observation again and again.
//! Reading it back from SQLite and parsing it (an hour of 1-second SampledData is ~15 KB of
//! JSON) would cost more than the merge itself, so the parsed copy is kept here.
//!
//! # What must hold
//! * An entry is the committed state of its Observation: the store inserts entries only after
//!   the transaction that wrote them committed, and drops them all when a resource is replaced
//!   from outside (`put_resource`).
//! * The entries' weights (the heap memory their parsed values take, counted allocation by
//!   allocation, see [`heap_bytes`]) never add up to more than the limit: the least recently
//!   used entries are evicted first.

use hashlink::LruCache;
use serde_json::{Map, Value};

/// What an allocation costs beyond its requested size (the allocator's rounding and headers;
/// mimalloc's size classes waste up to an eighth, 16 bytes is the typical small-block cost).
const PER_ALLOCATION: usize = 16;

/// The entry itself, its key and its id beside the value's own heap.
const ENTRY_OVERHEAD: usize = 160;

/// The heap memory `value` takes: string and vector capacities, map entries and their index,
/// plus [`PER_ALLOCATION`] for each allocation.
pub(crate) fn heap_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.capacity() + PER_ALLOCATION,
        Value::Array(items) => {
            items.capacity() * size_of::<Value>()
                + PER_ALLOCATION
                + items.iter().map(heap_bytes).sum::<usize>()
        }
        Value::Object(map) => map_bytes(map),
    }
}

fn map_bytes(map: &Map<String, Value>) -> usize {
    // An ordered map (indexmap): a vector of (hash, key, value) entries and a hash index of
    // one word per slot (at least one empty slot per eight).
    const ENTRY: usize = size_of::<u64>() + size_of::<String>() + size_of::<Value>();
    let entries = map.len() * ENTRY + PER_ALLOCATION;
    let index =
        (map.len() * 8 / 7 + 1).next_power_of_two() * (size_of::<usize>() + 1) + PER_ALLOCATION;
    entries
        + index
        + map
            .iter()
            .map(|(k, v)| k.capacity() + PER_ALLOCATION + heap_bytes(v))
            .sum::<usize>()
}

/// A cached Observation.
#[derive(Debug)]
pub(crate) struct CachedObservation {
    /// The resource id.
    pub id: String,
    /// Its version (`meta.versionId`).
    pub version: u64,
    /// The resource as stored.
    pub value: Value,
    weight: usize,
}

impl CachedObservation {
    /// An entry for an Observation, weighed by the memory it takes.
    pub fn new(id: String, version: u64, value: Value) -> CachedObservation {
        let weight = heap_bytes(&value) + id.capacity() * 2 + ENTRY_OVERHEAD;
        CachedObservation {
            id,
            version,
            value,
            weight,
        }
    }
}

/// Observations by identifier value, least recently used evicted first.
#[derive(Debug)]
pub(crate) struct ObservationCache {
    entries: LruCache<String, CachedObservation>,
    bytes: usize,
    limit: usize,
}

impl ObservationCache {
    /// An empty cache holding at most `limit` bytes; 0 disables it.
    pub fn new(limit: usize) -> ObservationCache {
        ObservationCache {
            entries: LruCache::new_unbounded(),
            bytes: 0,
            limit,
        }
    }

    /// The entry for `identifier`, without marking it as used (see [`touch`](Self::touch)).
    pub fn peek(&self, identifier: &str) -> Option<&CachedObservation> {
        self.entries.peek(identifier)
    }

    /// Marks the entry for `identifier` as recently used.
    pub fn touch(&mut self, identifier: &str) {
        let _ = self.entries.get(identifier);
    }

    /// Adds or replaces the entry for `identifier`, evicting as needed. An entry larger than
    /// the whole cache is not kept (and its old entry goes).
    pub fn insert(&mut self, identifier: String, entry: CachedObservation) {
        if let Some(old) = self.entries.remove(&identifier) {
            self.bytes -= old.weight;
        }
        if entry.weight > self.limit {
            return;
        }
        self.bytes += entry.weight;
        self.entries.insert(identifier, entry);
        while self.bytes > self.limit {
            match self.entries.remove_lru() {
                Some((_, old)) => self.bytes -= old.weight,
                None => break,
            }
        }
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// How many entries there are.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text_len: usize) -> CachedObservation {
        CachedObservation::new("id".into(), 1, Value::String("x".repeat(text_len)))
    }

    #[test]
    fn weighs_what_the_value_allocates() {
        let string = Value::String("x".repeat(1000));
        assert_eq!(heap_bytes(&string), 1000 + PER_ALLOCATION);
        let observation = serde_json::json!({
            "resourceType": "Observation",
            "valueSampledData": {"period": 1000, "data": "E ".repeat(3600)},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
        });
        let weight = heap_bytes(&observation);
        // The data string and the structure around it: more than the text, not many times it.
        let text = serde_json::to_string(&observation).unwrap().len();
        assert!(weight > text, "{weight} vs {text}");
        assert!(weight < text + 2048, "{weight} vs {text}");
    }

    #[test]
    fn evicts_least_recently_used_by_weight() {
        let w = |len: usize| entry(len).weight;
        let mut cache = ObservationCache::new(3 * w(1000));
        cache.insert("a".into(), entry(1000));
        cache.insert("b".into(), entry(1000));
        cache.insert("c".into(), entry(1000));
        cache.touch("a"); // a is now the most recent
        cache.insert("d".into(), entry(1000));
        assert!(cache.peek("b").is_none(), "b was the least recently used");
        assert!(cache.peek("a").is_some());
        assert!(cache.peek("c").is_some());
        assert_eq!(cache.len(), 3);
        cache.insert("a".into(), entry(100));
        assert_eq!(cache.bytes, 2 * w(1000) + w(100));
        cache.insert("huge".into(), entry(1 << 20));
        assert!(cache.peek("huge").is_none());
        assert_eq!(cache.len(), 3);
        cache.clear();
        assert_eq!((cache.len(), cache.bytes), (0, 0));
        let mut off = ObservationCache::new(0);
        off.insert("a".into(), entry(1));
        assert_eq!(off.len(), 0);
    }
}
