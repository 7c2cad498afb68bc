//! Consumer checkpoints: one small file per consumer in `consumers/`, replaced atomically.
//!
//! # What must hold
//! * A checkpoint file is never seen half-written: the new content goes to `<name>.ckpt.tmp`,
//!   is synced, renamed over `<name>.ckpt`, and the directory is synced. After a crash the file
//!   holds either the old or the new checkpoint; a leftover `.tmp` is removed at open.
//! * A damaged checkpoint is an error, never silently read as 0 (that would replay everything)
//!   or as the log end (that would skip records).
//! * Consumer names are file names, so they are restricted to a safe alphabet.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// Format name and version at the start of a checkpoint file.
const CHECKPOINT_MAGIC: &[u8; 8] = b"IOMTCKP1";
/// Magic, next offset (u64 LE), CRC-32C of the first 16 bytes (u32 LE).
const CHECKPOINT_LEN: usize = 20;
const EXTENSION: &str = "ckpt";
const TEMP_SUFFIX: &str = ".ckpt.tmp";

/// Rejects names that could not be a plain file name in `consumers/`.
pub(crate) fn validate_name(name: &str) -> Result<(), LogError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(LogError::InvalidConsumerName {
            name: name.to_owned(),
        })
    }
}

fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.{EXTENSION}"))
}

fn encode(next_offset: u64) -> [u8; CHECKPOINT_LEN] {
    let mut bytes = [0u8; CHECKPOINT_LEN];
    bytes[..8].copy_from_slice(CHECKPOINT_MAGIC);
    bytes[8..16].copy_from_slice(&next_offset.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..16]);
    bytes[16..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<u64, &'static str> {
    if bytes.len() != CHECKPOINT_LEN {
        return Err("wrong length");
    }
    if &bytes[..8] != CHECKPOINT_MAGIC {
        return Err("not an iomt-log checkpoint (bad magic)");
    }
    let crc = u32::from_le_bytes(bytes[16..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..16]) != crc {
        return Err("checksum mismatch");
    }
    Ok(u64::from_le_bytes(
        bytes[8..16].try_into().expect("8 bytes"),
    ))
}

/// Syncs a directory so that creations, renames and deletions in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("syncing directory", dir, e))
}

/// Durably sets `name`'s checkpoint to `next_offset`.
pub(crate) fn write(dir: &Path, name: &str, next_offset: u64, sync: bool) -> Result<(), LogError> {
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let write_temp = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(&encode(next_offset))?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    };
    write_temp().map_err(|e| LogError::io("writing checkpoint", &temp, e))?;
    let target = path_of(dir, name);
    fs::rename(&temp, &target).map_err(|e| LogError::io("replacing checkpoint", &target, e))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deletes `name`'s checkpoint.
pub(crate) fn remove(dir: &Path, name: &str, sync: bool) -> Result<(), LogError> {
    let path = path_of(dir, name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LogError::io("deleting checkpoint", &path, e)),
    }
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads every checkpoint in `dir` and removes leftover temporary files.
pub(crate) fn load_all(dir: &Path) -> Result<BTreeMap<String, u64>, LogError> {
    let mut checkpoints = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("listing checkpoints", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing checkpoints", dir, e))?;
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.ends_with(TEMP_SUFFIX) {
            // A commit that crashed before its rename: the old checkpoint is still in place.
            fs::remove_file(&path)
                .map_err(|e| LogError::io("removing stale checkpoint", &path, e))?;
            continue;
        }
        let Some(name) = file_name.strip_suffix(&format!(".{EXTENSION}")) else {
            continue;
        };
        if validate_name(name).is_err() {
            continue;
        }
        let bytes = fs::read(&path).map_err(|e| LogError::io("reading checkpoint", &path, e))?;
        let next_offset = decode(&bytes).map_err(|reason| LogError::CorruptCheckpoint {
            path: path.clone(),
            consumer: name.to_owned(),
            reason,
        })?;
        checkpoints.insert(name.to_owned(), next_offset);
    }
    Ok(checkpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_limited_to_a_file_name_safe_alphabet() {
        for good in ["pipeline", "normalize-1", "a.b_c", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "ü", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checkpoints_survive_a_reload_and_replace_atomically() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "pipeline", 10, true).expect("write");
        write(dir.path(), "pipeline", 20, true).expect("rewrite");
        write(dir.path(), "audit", 0, true).expect("write");
        // A commit that died before its rename leaves a temporary file behind.
        fs::write(dir.path().join("pipeline.ckpt.tmp"), b"half").expect("stale temp");

        let loaded = load_all(dir.path()).expect("load");
        assert_eq!(
            loaded,
            BTreeMap::from([("audit".to_owned(), 0), ("pipeline".to_owned(), 20)])
        );
        assert!(!dir.path().join("pipeline.ckpt.tmp").exists());

        remove(dir.path(), "audit", true).expect("remove");
        assert_eq!(load_all(dir.path()).expect("load").len(), 1);
    }

    #[test]
    fn a_damaged_checkpoint_is_an_error_naming_the_file_and_consumer() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "pipeline", 99, false).expect("write");
        let path = dir.path().join("pipeline.ckpt");
        let mut bytes = fs::read(&path).expect("read");
        bytes[9] ^= 0xff;
        fs::write(&path, &bytes).expect("damage");

        let error = load_all(dir.path()).expect_err("damaged");
        assert!(
            matches!(&error, LogError::CorruptCheckpoint { consumer, reason: "checksum mismatch", .. } if consumer == "pipeline"),
            "{error}"
        );
        assert!(error.to_string().contains("delete it"));
    }
}
