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
//! * The entries' weights (their JSON size plus a fixed overhead, an estimate of the memory a
//!   parsed copy takes) never add up to more than the limit: the least recently used entries
//!   are evicted first.

use hashlink::LruCache;
use serde_json::Value;

/// Estimated memory of a parsed Observation besides its JSON text's size (maps, vectors).
const ENTRY_OVERHEAD: usize = 2048;

/// A parsed `serde_json::Value` (ordered maps, one allocation per string) takes several times
/// its JSON text; measured with the service benchmark's resident memory.
const PARSED_PER_JSON_BYTE: usize = 4;

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
    /// An entry for an Observation whose JSON is `json_len` bytes long.
    pub fn new(id: String, version: u64, value: Value, json_len: usize) -> CachedObservation {
        CachedObservation {
            id,
            version,
            value,
            weight: json_len * PARSED_PER_JSON_BYTE + ENTRY_OVERHEAD,
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
    /// An empty cache holding at most `limit` bytes (estimated); 0 disables it.
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

    fn entry(json_len: usize) -> CachedObservation {
        CachedObservation::new("id".into(), 1, Value::Null, json_len)
    }

    #[test]
    fn evicts_least_recently_used_by_weight() {
        let w = |len: usize| len * PARSED_PER_JSON_BYTE + ENTRY_OVERHEAD;
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
