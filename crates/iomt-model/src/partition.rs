//! The partition key the original gives each normalized measurement.
//!
//! The original sends measurements to its normalized Event Hub keyed by a deterministic hash of
//! the lower-cased device id, so that one device's measurements stay in one partition and in
//! order. Writing the same key lets iomt and the original share a normalized topic.

use thiserror::Error;

/// Why no partition key could be computed.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionKeyError {
    /// The range must be positive.
    #[error("partition key range must be positive, got {0}")]
    InvalidRange(i32),
    /// The hash was `i32::MIN`, whose absolute value .NET cannot compute.
    #[error(
        "device id hashes to i32::MIN, which the original cannot partition; use another device id"
    )]
    Overflow,
}

/// The Java-style string hash of the original (`h = 31*h + c` over UTF-16 code units, wrapping),
/// reduced to `abs(h) % range`, as decimal text. The original uses `range = 256` over
/// `DeviceId.ToLower()`; [`partition_key`] does that.
pub fn deterministic_hash(input: &str, range: i32) -> Result<String, PartitionKeyError> {
    if range <= 0 {
        return Err(PartitionKeyError::InvalidRange(range));
    }
    let mut h: i32 = 0;
    for unit in input.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = h.checked_abs().ok_or(PartitionKeyError::Overflow)?;
    Ok((abs % range).to_string())
}

/// The partition key of a device's measurements: the hash of the lower-cased device id in
/// `0..256`.
pub fn partition_key(device_id: &str) -> Result<String, PartitionKeyError> {
    deterministic_hash(&device_id.to_lowercase(), 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hashes() {
        assert_eq!(deterministic_hash("abba", 256).unwrap(), "32");
        assert_eq!(deterministic_hash("aaabbb", 256).unwrap(), "191");
        assert_eq!(partition_key("ABBA").unwrap(), "32");
        assert_eq!(
            deterministic_hash("test", 0),
            Err(PartitionKeyError::InvalidRange(0))
        );
    }
}
