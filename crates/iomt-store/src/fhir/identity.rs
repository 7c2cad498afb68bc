//! Identity resolution against the local store: which Device, Patient and Encounter a group
//! belongs to, with the semantics of SPEC §9 and the FHIR server path
//! (`iomt-fhir-client`'s `identity` module), searches replaced by identifier lookups.
//!
//! | mode | Device | Patient | Encounter |
//! |---|---|---|---|
//! | `lookup` | by identifier `[system\|]deviceId`: none ⇒ `FhirResourceNotFoundException`, several ⇒ `MultipleResourceFoundException` | from `Device.patient.reference`, which must be `Patient/<id>`, else not found | when the group has an encounter id: by identifier (no system), none ⇒ not found |
//! | `lookup_with_encounter` | as lookup | as lookup | required: a group without one ⇒ `ResourceIdentityNotDefinedException` |
//! | `create` | as lookup; when the Device or its Patient is not found: the Patient is found by identifier or created as `Patient/<sha256("_"+patientId)>`, the Device found or created as `Device/<sha256(system+"_"+deviceId)>` and linked; a Device linked to another Patient ⇒ `PatientDeviceMismatchException`; no patient id ⇒ `ResourceIdentityNotDefinedException` | | as lookup |
//!
//! # Caching
//! Resolved (Device, Patient) pairs are cached per device identifier and encounters per
//! encounter identifier. Results of a `persist` call go into the caches only after its
//! transaction committed (until then they live in the call), and `put_resource` of a Device,
//! Patient or Encounter empties them, so a cached link is always one the store holds. Failures
//! are never cached.

use std::collections::HashMap;
use std::sync::Arc;

use hashlink::LruCache;
use iomt_transform::ObservationGroup;
use iomt_transform::observation::resource_id;
use rusqlite::Connection;
use serde_json::{Map, json};

use super::db::{self, Found};
use super::resource::{parse_stored, patient_id_from_reference, patient_reference};
use super::{LocalIdentityMode, LocalStoreConfig};
use crate::error::StoreError;

const OP: &str = "resolve device identity";

const DEVICE_HINT: &str = "no Device has the measurement's device id as identifier (searched with default_device_identifier_system when set): add the Device to the local store, or use identity mode create";
const PATIENT_HINT: &str = "the Device has no patient reference of the form Patient/<id>: link the Device to its Patient, or use identity mode create";
const ENCOUNTER_HINT: &str = "no Encounter has the measurement's encounter id as identifier: add the Encounter to the local store or correct the device mapping's encounterIdExpression";

/// A device and the patient it is linked to, as resource ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceLink {
    pub device: Arc<str>,
    pub patient: Arc<str>,
}

/// The identity caches (committed state).
#[derive(Debug)]
pub(crate) struct IdentityCache {
    pub devices: LruCache<String, DeviceLink>,
    pub encounters: LruCache<String, Arc<str>>,
}

impl IdentityCache {
    pub fn new(capacity: usize) -> IdentityCache {
        IdentityCache {
            devices: LruCache::new(capacity),
            encounters: LruCache::new(capacity),
        }
    }

    pub fn clear(&mut self) {
        self.devices.clear();
        self.encounters.clear();
    }
}

/// What one `persist` call resolved (published to the cache after commit).
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub devices: HashMap<String, DeviceLink>,
    pub encounters: HashMap<String, Arc<str>>,
}

impl Resolved {
    pub fn publish(self, cache: &mut IdentityCache) {
        for (k, v) in self.devices {
            cache.devices.insert(k, v);
        }
        for (k, v) in self.encounters {
            cache.encounters.insert(k, v);
        }
    }
}

/// Resolves groups inside one transaction.
pub(crate) struct Resolver<'a> {
    pub conn: &'a Connection,
    pub config: &'a LocalStoreConfig,
    pub cache: &'a mut IdentityCache,
    pub resolved: &'a mut Resolved,
    pub last_updated: &'a str,
}

fn not_found(resource_type: &'static str, hint: &'static str) -> StoreError {
    StoreError::NotFound {
        resource_type,
        hint,
    }
}

impl Resolver<'_> {
    /// The group's Device and its Patient.
    pub fn device(&mut self, group: &ObservationGroup) -> Result<DeviceLink, StoreError> {
        let device_id = group.device_id.as_str();
        if device_id.trim().is_empty() {
            return Err(StoreError::IdentityNotDefined {
                resource_type: "Device",
                mode: self.config.identity.as_str(),
                field: "deviceIdExpression",
            });
        }
        if let Some(link) = self.resolved.devices.get(device_id) {
            return Ok(link.clone());
        }
        if let Some(link) = self.cache.devices.get(device_id) {
            return Ok(link.clone());
        }
        let link = match self.config.identity {
            LocalIdentityMode::Create => match self.lookup(device_id) {
                // No Device with the identifier: no need to search for it again.
                Err(StoreError::NotFound {
                    resource_type: "Device",
                    ..
                }) => self.create(group, false)?,
                // A Device without its Patient.
                Err(StoreError::NotFound {
                    resource_type: "Patient",
                    ..
                }) => self.create(group, true)?,
                other => other?,
            },
            LocalIdentityMode::Lookup | LocalIdentityMode::LookupWithEncounter => {
                self.lookup(device_id)?
            }
        };
        self.resolved
            .devices
            .insert(device_id.to_owned(), link.clone());
        Ok(link)
    }

    /// The group's Encounter id: resolved when the group has an encounter id, required in mode
    /// `lookup_with_encounter`.
    pub fn encounter(&mut self, group: &ObservationGroup) -> Result<Option<Arc<str>>, StoreError> {
        let encounter_id = group
            .encounter_id
            .as_deref()
            .filter(|e| !e.trim().is_empty());
        let Some(encounter_id) = encounter_id else {
            if self.config.identity == LocalIdentityMode::LookupWithEncounter {
                return Err(StoreError::IdentityNotDefined {
                    resource_type: "Encounter",
                    mode: self.config.identity.as_str(),
                    field: "encounterIdExpression",
                });
            }
            return Ok(None);
        };
        if let Some(id) = self.resolved.encounters.get(encounter_id) {
            return Ok(Some(id.clone()));
        }
        if let Some(id) = self.cache.encounters.get(encounter_id) {
            return Ok(Some(id.clone()));
        }
        let found = self
            .find_one("Encounter", None, encounter_id)?
            .ok_or_else(|| not_found("Encounter", ENCOUNTER_HINT))?;
        let id: Arc<str> = Arc::from(found.id);
        self.resolved
            .encounters
            .insert(encounter_id.to_owned(), id.clone());
        Ok(Some(id))
    }

    /// The one resource with the identifier, if any.
    fn find_one(
        &self,
        resource_type: &'static str,
        system: Option<&str>,
        value: &str,
    ) -> Result<Option<Found>, StoreError> {
        let mut found = db::find(self.conn, OP, resource_type, system, value)?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            count => Err(StoreError::MultipleFound {
                resource_type,
                count,
            }),
        }
    }

    fn device_system(&self) -> Option<&str> {
        self.config.default_device_identifier_system.as_deref()
    }

    fn lookup(&self, device_id: &str) -> Result<DeviceLink, StoreError> {
        let found = self
            .find_one("Device", self.device_system(), device_id)?
            .ok_or_else(|| not_found("Device", DEVICE_HINT))?;
        let device = parse_stored("Device", &found.body)?;
        let patient = patient_reference(&device)
            .and_then(patient_id_from_reference)
            .ok_or_else(|| not_found("Patient", PATIENT_HINT))?;
        Ok(DeviceLink {
            device: Arc::from(found.id),
            patient: Arc::from(patient),
        })
    }

    /// The create fallback: ensure the Patient, then the Device linked to it (searched for
    /// only when `device_exists`; else the lookup just found none, in this transaction).
    fn create(
        &self,
        group: &ObservationGroup,
        device_exists: bool,
    ) -> Result<DeviceLink, StoreError> {
        let patient_id = group
            .patient_id
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .ok_or(StoreError::IdentityNotDefined {
                resource_type: "Patient",
                mode: "create",
                field: "patientIdExpression",
            })?;
        let patient = match self.find_one("Patient", None, patient_id)? {
            Some(found) => found.id,
            None => {
                let id = resource_id(None, patient_id);
                let body = json!({
                    "resourceType": "Patient",
                    "id": id,
                    "identifier": [{"value": patient_id}],
                });
                db::write_resource(self.conn, OP, "Patient", &id, body, self.last_updated)?;
                id
            }
        };
        let reference = format!("Patient/{patient}");
        let system = self.device_system();
        let device_id = group.device_id.as_str();
        let existing = if device_exists {
            self.find_one("Device", system, device_id)?
        } else {
            None
        };
        let device = match existing {
            None => {
                let id = resource_id(system, device_id);
                let mut identifier = Map::new();
                if let Some(s) = system {
                    identifier.insert("system".into(), s.into());
                }
                identifier.insert("value".into(), device_id.into());
                let body = json!({
                    "resourceType": "Device",
                    "id": id,
                    "identifier": [identifier],
                    "patient": {"reference": reference},
                });
                db::write_resource(self.conn, OP, "Device", &id, body, self.last_updated)?;
                id
            }
            Some(found) => {
                let mut existing = parse_stored("Device", &found.body)?;
                match patient_reference(&existing) {
                    Some(r) if r == reference => {}
                    Some(_) => return Err(StoreError::PatientDeviceMismatch),
                    None => {
                        if let Some(object) = existing.as_object_mut() {
                            object.insert("patient".into(), json!({"reference": reference}));
                        }
                        db::write_resource(
                            self.conn,
                            OP,
                            "Device",
                            &found.id,
                            existing,
                            self.last_updated,
                        )?;
                    }
                }
                found.id
            }
        };
        Ok(DeviceLink {
            device: Arc::from(device),
            patient: Arc::from(patient),
        })
    }
}
