//! The mappings in force, and reloading them from their files without a restart.
//!
//! # What must hold
//! * The pipeline always runs on a complete, valid pair of mappings: a batch takes one
//!   [`Mappings`] snapshot and keeps it to the end.
//! * An invalid file on reload changes nothing: the last good mappings stay in force, the
//!   error is logged (template, field, line; never message data), counted, and shown by
//!   `/readyz` until a valid file replaces it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use iomt_normalize::DeviceMapping;
use iomt_transform::FhirTemplates;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::{Metrics, ResultLabel};

/// One consistent pair of mappings.
#[derive(Debug)]
pub struct Mappings {
    /// The device mapping.
    pub device: DeviceMapping,
    /// The FHIR mapping.
    pub fhir: Arc<FhirTemplates>,
    /// The device mapping's text, as loaded (for the mapping debugger page).
    pub device_text: String,
    /// The FHIR mapping's text, as loaded.
    pub fhir_text: String,
}

/// Why mappings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MappingLoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The device mapping is invalid.
    #[error(
        "the device mapping {path} is invalid: {message}; run `iomt validate --device-mapping {path}` for every error"
    )]
    Device {
        /// The file.
        path: PathBuf,
        /// The loader's errors.
        message: String,
    },
    /// The FHIR mapping is invalid.
    #[error(
        "the fhir mapping {path} is invalid: {message}; run `iomt validate --fhir-mapping {path}` for every error"
    )]
    Fhir {
        /// The file.
        path: PathBuf,
        /// The loader's errors.
        message: String,
    },
}

impl Mappings {
    /// Loads both files.
    ///
    /// # Errors
    /// The first file that cannot be read or is invalid.
    pub fn load(device: &Path, fhir: &Path) -> Result<Mappings, MappingLoadError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| MappingLoadError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let device_text = read(device)?;
        let fhir_text = read(fhir)?;
        Mappings::from_texts(device_text, fhir_text, device, fhir)
    }

    /// Loads mappings from their texts (`device_path`/`fhir_path` name them in errors).
    ///
    /// # Errors
    /// An invalid mapping.
    pub fn from_texts(
        device_text: String,
        fhir_text: String,
        device_path: &Path,
        fhir_path: &Path,
    ) -> Result<Mappings, MappingLoadError> {
        let device =
            DeviceMapping::from_json_str(&device_text).map_err(|e| MappingLoadError::Device {
                path: device_path.to_owned(),
                message: first_line(&e.to_string()),
            })?;
        let fhir =
            FhirTemplates::from_json_str(&fhir_text).map_err(|e| MappingLoadError::Fhir {
                path: fhir_path.to_owned(),
                message: first_line(&e.to_string()),
            })?;
        Ok(Mappings {
            device,
            fhir: Arc::new(fhir),
            device_text,
            fhir_text,
        })
    }
}

fn first_line(text: &str) -> String {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default().trim().to_owned();
    let more = lines.count();
    if more > 0 {
        format!("{first} (and {more} more)")
    } else {
        first
    }
}

/// The mappings in force, shared by the pipeline and the admin API.
#[derive(Debug)]
pub struct MappingsHandle {
    current: RwLock<Arc<Mappings>>,
    last_error: RwLock<Option<String>>,
    device_path: PathBuf,
    fhir_path: PathBuf,
    /// The files' stamps when the handle was made, so a change made before the watcher's
    /// first look is still seen as a change.
    loaded: (Option<Stamp>, Option<Stamp>),
}

/// A file's modification time and size.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl MappingsHandle {
    /// Wraps loaded mappings and the files they came from.
    pub fn new(mappings: Mappings, device_path: PathBuf, fhir_path: PathBuf) -> MappingsHandle {
        let loaded = (stamp(&device_path), stamp(&fhir_path));
        MappingsHandle {
            current: RwLock::new(Arc::new(mappings)),
            last_error: RwLock::new(None),
            device_path,
            fhir_path,
            loaded,
        }
    }

    /// The mappings now in force.
    pub fn current(&self) -> Arc<Mappings> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The error of the last failed reload, while the files stay invalid.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the files again; on success they are in force, on failure the last good ones
    /// stay and the error is kept for `/readyz`.
    pub fn reload(&self, metrics: &Metrics) -> Result<(), MappingLoadError> {
        let result = Mappings::load(&self.device_path, &self.fhir_path);
        let label = |r: &str| ResultLabel { result: r.into() };
        match result {
            Ok(m) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
                metrics.mapping_reloads.get_or_create(&label("ok")).inc();
                info!("mappings reloaded");
                Ok(())
            }
            Err(e) => {
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                metrics
                    .mapping_reloads
                    .get_or_create(&label("failed"))
                    .inc();
                warn!(error = %e, "mapping reload failed; the last good mappings stay in force");
                Err(e)
            }
        }
    }

    /// Watches the files every `interval` and reloads when either changes (modification time
    /// or size), until `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut seen = self.loaded;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let now = (stamp(&self.device_path), stamp(&self.fhir_path));
            if now != seen {
                seen = now;
                let _ = self.reload(&metrics);
            }
        }
    }
}
