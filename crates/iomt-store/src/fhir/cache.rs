//! The Observation cache: recently written hour/day Observations, as stored (compressed, see
//! `body`), by identifier, bounded by their size.
//!
//! A stream of groups for one hour or day merges into the same Observation again and again.
//! Reading it back from SQLite costs an identifier search, a primary-key seek and the row's
//! pages each time; keeping the stored form here leaves only its decompression and parse
//! (microseconds). The stored form, not the parsed one: an hour of 1-second SampledData takes
//! ~10 KB parsed but a few hundred bytes compressed, so the same budget holds the open hours of
//! twenty times as many devices — and with 10,000 devices, parsed copies of all of them would
//! not fit under any memory target.
//!
//! # What must hold
//! * An entry is the committed state of its Observation: the store inserts entries only after
//!   the transaction that wrote them committed, and drops them all when a resource is replaced
//!   from outside (`put_resource`). A transaction takes out the entries of the Observations it
//!   works on ([`ObservationCache::take`]), so the cache never holds a second copy of them,
//!   and puts them (or their successors) back once committed.
//! * The entries' weights (their bytes, id and key plus [`ENTRY_OVERHEAD`]) never add up to
//!   more than the limit: the least recently used entries are evicted first.

use hashlink::LruCache;

/// The entry itself, its key, the map's slot and the allocator's rounding beside the bytes.
const ENTRY_OVERHEAD: usize = 192;

/// A cached Observation.
#[derive(Debug)]
pub(crate) struct CachedObservation {
    /// The resource id.
    pub id: String,
    /// Its version (`meta.versionId`).
    pub version: u64,
    /// The resource as stored in the `body` column.
    pub stored: Vec<u8>,
    weight: usize,
}

impl CachedObservation {
    /// An entry for an Observation, weighed by the memory it takes.
    pub fn new(id: String, version: u64, mut stored: Vec<u8>) -> CachedObservation {
        stored.shrink_to_fit();
        let weight = stored.capacity() + id.capacity() * 2 + ENTRY_OVERHEAD;
        CachedObservation {
            id,
            version,
            stored,
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

    /// The entry for `identifier`, without marking it as used.
    #[cfg(test)]
    pub fn peek(&self, identifier: &str) -> Option<&CachedObservation> {
        self.entries.peek(identifier)
    }

    /// Takes the entry for `identifier` out of the cache (a persist call holds it while it
    /// works on the Observation, and puts it back, or its successor, once committed).
    pub fn take(&mut self, identifier: &str) -> Option<CachedObservation> {
        let entry = self.entries.remove(identifier)?;
        self.bytes -= entry.weight;
        Some(entry)
    }

    /// Adds or replaces the entry for `identifier`, evicting as needed. An entry larger than
    /// the whole cache is not kept (and its old entry goes).
    pub fn insert(&mut self, identifier: String, entry: CachedObservation) {
        drop(self.take(&identifier));
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

    fn entry(len: usize) -> CachedObservation {
        CachedObservation::new("id".into(), 1, vec![b'x'; len])
    }

    #[test]
    fn weighs_what_the_entry_holds() {
        let mut stored = Vec::with_capacity(4096);
        stored.extend_from_slice(&[1; 300]);
        let e = CachedObservation::new("an-id".into(), 1, stored);
        // Spare capacity is given back, so it is not counted.
        assert_eq!(e.stored.capacity(), 300);
        assert_eq!(e.weight, 300 + 2 * 5 + ENTRY_OVERHEAD);
    }

    #[test]
    fn evicts_least_recently_used_by_weight() {
        let w = |len: usize| entry(len).weight;
        let mut cache = ObservationCache::new(3 * w(1000));
        cache.insert("a".into(), entry(1000));
        cache.insert("b".into(), entry(1000));
        cache.insert("c".into(), entry(1000));
        let a = cache.take("a").unwrap(); // back in: a is now the most recent
        cache.insert("a".into(), a);
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
