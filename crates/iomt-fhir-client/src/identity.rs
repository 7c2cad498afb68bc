//! Identity resolution: which Device, Patient and Encounter an observation group belongs to
//! (SPEC §9).
//!
//! | mode | Device | Patient | Encounter |
//! |---|---|---|---|
//! | `lookup` | `Device?identifier=[system\|]deviceId`: none ⇒ `FhirResourceNotFoundException`, several ⇒ `MultipleResourceFoundException` | from `Device.patient.reference`, which must be `Patient/<id>`, else not found | when the group has an encounter id: `Encounter?identifier=<id>` (no system), none ⇒ not found |
//! | `lookup_with_encounter` | as lookup | as lookup | required: a group without one ⇒ `ResourceIdentityNotDefinedException` |
//! | `create` | as lookup; when the Device or its Patient is not found: the Patient is searched (`Patient?identifier=<patientId>`) or created as `Patient/<sha256("_"+patientId)>`, the Device searched or created as `Device/<sha256(system+"_"+deviceId)>` and linked; a Device linked to another Patient ⇒ `PatientDeviceMismatchException`; no patient id ⇒ `ResourceIdentityNotDefinedException` | | as lookup |
//!
//! The message's patient id is used only by `create`, as in the original.
//!
//! # Caching
//! Resolved (Device, Patient) pairs are cached per device identifier, encounters per
//! encounter identifier, each with the configured capacity and time to live. Failures are never
//! cached: a Device created after a failure is found by the next group.
//!
//! # Deviations from the original
//! * The original cached one result per device *including the encounter*, so a device's later
//!   groups kept the first group's encounter for two hours, and a group whose identity came from
//!   the create fallback got no encounter at all (SPEC §9). Here the encounter is resolved for
//!   every group from its own encounter id (through its own cache), in every mode.
//! * Search results are filtered for an exact identifier match (value, and system when one is
//!   searched), as the original did only for Observations: a server matching prefixes or
//!   folding case cannot link a group to the wrong Device, Patient or Encounter.
//! * Entries expire a fixed time after they were stored (`time_to_live`); the original's
//!   sliding expiry never noticed a device re-linked to another patient while it kept sending.

use std::sync::Arc;

use foldhash::fast::RandomState;
use iomt_transform::observation::resource_id;
use iomt_transform::{ObservationGroup, ResolvedIds};
use moka::sync::Cache;
use serde_json::{Value, json};
use tracing::debug;

use crate::config::{IdentityConfig, IdentityMode};
use crate::error::{FhirClientError, Interaction, Operation};
use crate::http::{FhirClient, version_from_etag};
use crate::metrics::Counters;
use crate::search::{has_identifier, identifier_token};

/// A device and the patient it is linked to, as FHIR logical ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLink {
    /// The Device resource id.
    pub device: Arc<str>,
    /// The Patient resource id.
    pub patient: Arc<str>,
}

/// Resolves groups to FHIR resource ids, with caches.
#[derive(Debug, Clone)]
pub struct IdentityResolver {
    client: FhirClient,
    mode: IdentityMode,
    device_system: Option<Arc<str>>,
    devices: Cache<String, Arc<DeviceLink>, RandomState>,
    encounters: Cache<String, Arc<str>, RandomState>,
}

fn not_found(resource_type: &'static str, hint: &'static str) -> FhirClientError {
    FhirClientError::NotFound {
        resource_type,
        hint,
    }
}

const DEVICE_HINT: &str = "no Device has the measurement's device id as identifier (searched with identity.default_device_identifier_system when set): create the Device, or use identity mode create";
const PATIENT_HINT: &str = "the Device has no patient reference of the form Patient/<id>: link the Device to its Patient, or use identity mode create";
const ENCOUNTER_HINT: &str = "no Encounter has the measurement's encounter id as identifier: create the Encounter or correct the device mapping's encounterIdExpression";

impl IdentityResolver {
    /// A resolver using `client`.
    pub fn new(client: FhirClient, config: &IdentityConfig) -> IdentityResolver {
        let (capacity, ttl) = (config.cache.capacity.get(), config.cache.time_to_live);
        IdentityResolver {
            client,
            mode: config.mode,
            device_system: config.device_system().map(Arc::from),
            devices: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build_with_hasher(RandomState::default()),
            encounters: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build_with_hasher(RandomState::default()),
        }
    }

    /// The mode.
    pub fn mode(&self) -> IdentityMode {
        self.mode
    }

    /// The FHIR ids for `group`'s device, patient and encounter.
    ///
    /// # Errors
    /// `FhirResourceNotFoundException`, `MultipleResourceFoundException`,
    /// `PatientDeviceMismatchException` and `ResourceIdentityNotDefinedException` classes as
    /// the table in the module docs says, and request failures.
    pub async fn resolve(&self, group: &ObservationGroup) -> Result<ResolvedIds, FhirClientError> {
        let link = self.device(group).await?;
        self.with_encounter(&link, group).await
    }

    /// The group's Device and its Patient (cached per device identifier).
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve), except the encounter's.
    pub async fn device(
        &self,
        group: &ObservationGroup,
    ) -> Result<Arc<DeviceLink>, FhirClientError> {
        let counters = self.client.counters_ref();
        let device_id = group.device_id.as_str();
        if device_id.trim().is_empty() {
            return Err(FhirClientError::IdentityNotDefined {
                resource_type: "Device",
                mode: self.mode_name(),
                field: "deviceIdExpression",
            });
        }
        if let Some(link) = self.devices.get(device_id) {
            Counters::inc(&counters.identity_cache_hits);
            return Ok(link);
        }
        Counters::inc(&counters.identity_cache_misses);
        let link = match self.mode {
            IdentityMode::Create => match self.lookup(device_id).await {
                Err(FhirClientError::NotFound {
                    resource_type: "Device" | "Patient",
                    ..
                }) => self.create(group).await?,
                other => other?,
            },
            IdentityMode::Lookup | IdentityMode::LookupWithEncounter => {
                self.lookup(device_id).await?
            }
        };
        debug!(device_id, device = %link.device, patient = %link.patient, "resolved device identity");
        let link = Arc::new(link);
        self.devices.insert(device_id.to_owned(), link.clone());
        Ok(link)
    }

    /// The ids for `group` given its device link: adds the group's Encounter (cached per
    /// encounter identifier), required in mode `lookup_with_encounter`.
    ///
    /// # Errors
    /// Encounter not found or ambiguous, a missing encounter id where it is required, request
    /// failures.
    pub async fn with_encounter(
        &self,
        link: &DeviceLink,
        group: &ObservationGroup,
    ) -> Result<ResolvedIds, FhirClientError> {
        let encounter_id = group
            .encounter_id
            .as_deref()
            .filter(|e| !e.trim().is_empty());
        let encounter = match (encounter_id, self.mode) {
            (None, IdentityMode::LookupWithEncounter) => {
                return Err(FhirClientError::IdentityNotDefined {
                    resource_type: "Encounter",
                    mode: self.mode_name(),
                    field: "encounterIdExpression",
                });
            }
            (None, _) => None,
            (Some(id), _) => Some(self.encounter(id).await?),
        };
        Ok(ResolvedIds {
            patient: link.patient.clone(),
            device: link.device.clone(),
            encounter,
        })
    }

    /// Forgets the cached identity of a device (e.g. after the server said its Device is gone).
    pub fn invalidate(&self, device_id: &str) {
        self.devices.invalidate(device_id);
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            IdentityMode::Lookup => "lookup",
            IdentityMode::Create => "create",
            IdentityMode::LookupWithEncounter => "lookup_with_encounter",
        }
    }

    /// The one resource of `resource_type` with identifier `value` (and `system`), if any.
    async fn find_one(
        &self,
        resource_type: &'static str,
        system: Option<&str>,
        value: &str,
    ) -> Result<Option<Value>, FhirClientError> {
        let token = identifier_token(system, value);
        let found = self
            .client
            .search(resource_type, &[("identifier", &token)])
            .await?;
        let mut matched: Vec<Value> = found
            .into_iter()
            .filter(|r| has_identifier(r, system, value))
            .collect();
        match matched.len() {
            0 => Ok(None),
            1 => Ok(matched.pop()),
            count => Err(FhirClientError::MultipleFound {
                resource_type,
                count,
            }),
        }
    }

    async fn lookup(&self, device_id: &str) -> Result<DeviceLink, FhirClientError> {
        let device = self
            .find_one("Device", self.device_system.as_deref(), device_id)
            .await?
            .ok_or_else(|| not_found("Device", DEVICE_HINT))?;
        let device_res = resource_id_of(&device, "Device")?;
        let patient = patient_reference(&device)
            .and_then(patient_id_from_reference)
            .ok_or_else(|| not_found("Patient", PATIENT_HINT))?;
        Ok(DeviceLink {
            device: Arc::from(device_res),
            patient: Arc::from(patient),
        })
    }

    async fn encounter(&self, encounter_id: &str) -> Result<Arc<str>, FhirClientError> {
        if let Some(id) = self.encounters.get(encounter_id) {
            return Ok(id);
        }
        let encounter = self
            .find_one("Encounter", None, encounter_id)
            .await?
            .ok_or_else(|| not_found("Encounter", ENCOUNTER_HINT))?;
        let id: Arc<str> = Arc::from(resource_id_of(&encounter, "Encounter")?);
        self.encounters.insert(encounter_id.to_owned(), id.clone());
        Ok(id)
    }

    /// The create fallback: ensure the Patient, then the Device linked to it.
    async fn create(&self, group: &ObservationGroup) -> Result<DeviceLink, FhirClientError> {
        let patient_id = group
            .patient_id
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .ok_or(FhirClientError::IdentityNotDefined {
                resource_type: "Patient",
                mode: "create",
                field: "patientIdExpression",
            })?;
        let patient = match self.find_one("Patient", None, patient_id).await? {
            Some(p) => resource_id_of(&p, "Patient")?.to_owned(),
            None => {
                let id = resource_id(None, patient_id);
                let body = json!({
                    "resourceType": "Patient",
                    "id": id,
                    "identifier": [{"value": patient_id}],
                });
                self.put("Patient", &id, &body, None).await?;
                debug!(patient = %id, "created patient");
                id
            }
        };
        let reference = format!("Patient/{patient}");
        let system = self.device_system.as_deref();
        let device_id = group.device_id.as_str();
        let device = match self.find_one("Device", system, device_id).await? {
            None => {
                let id = resource_id(system, device_id);
                let mut identifier = serde_json::Map::new();
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
                self.put("Device", &id, &body, None).await?;
                debug!(device = %id, "created device");
                id
            }
            Some(mut existing) => {
                let id = resource_id_of(&existing, "Device")?.to_owned();
                match patient_reference(&existing) {
                    Some(r) if r == reference => {}
                    Some(_) => return Err(FhirClientError::PatientDeviceMismatch),
                    None => {
                        let version = existing
                            .get("meta")
                            .and_then(|m| m.get("versionId"))
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        if let Some(obj) = existing.as_object_mut() {
                            obj.insert("patient".into(), json!({"reference": reference}));
                        }
                        self.put("Device", &id, &existing, version.as_deref())
                            .await?;
                        debug!(device = %id, "linked device to patient");
                    }
                }
                id
            }
        };
        Ok(DeviceLink {
            device: Arc::from(device),
            patient: Arc::from(patient),
        })
    }

    async fn put(
        &self,
        resource_type: &'static str,
        id: &str,
        body: &Value,
        version: Option<&str>,
    ) -> Result<Option<String>, FhirClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| FhirClientError::InvalidResponse {
            operation: Operation::new(Interaction::Update, resource_type),
            reason: e.to_string(),
        })?;
        let written = self
            .client
            .update(resource_type, id, bytes.into(), version)
            .await?;
        Counters::inc(&self.client.counters_ref().resources_created);
        Ok(written.version.or_else(|| {
            serde_json::from_slice::<Value>(&written.body)
                .ok()
                .and_then(|v| {
                    v.get("meta")
                        .and_then(|m| m.get("versionId"))
                        .and_then(Value::as_str)
                        .and_then(version_from_etag)
                })
        }))
    }
}

fn resource_id_of<'a>(
    resource: &'a Value,
    resource_type: &'static str,
) -> Result<&'a str, FhirClientError> {
    resource
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or(FhirClientError::InvalidResponse {
            operation: Operation::new(Interaction::Search, resource_type),
            reason: format!("a {resource_type} in the search results has no id"),
        })
}

fn patient_reference(device: &Value) -> Option<&str> {
    device
        .get("patient")
        .and_then(|p| p.get("reference"))
        .and_then(Value::as_str)
}

/// The id in a `Patient/<id>` reference: prefix compared case-insensitively, id of
/// `[A-Za-z0-9_.\-~#]+` (so absolute URLs, `_history` and query strings are refused), as the
/// original's `ModelExtensions`.
pub(crate) fn patient_id_from_reference(reference: &str) -> Option<&str> {
    let prefix = reference.get(..8)?;
    if !prefix.eq_ignore_ascii_case("patient/") {
        return None;
    }
    let id = &reference[8..];
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~' | b'#')))
    .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_references() {
        assert_eq!(
            patient_id_from_reference("Patient/abc-1.2"),
            Some("abc-1.2")
        );
        assert_eq!(patient_id_from_reference("patient/x_~#"), Some("x_~#"));
        assert_eq!(patient_id_from_reference("Patient/"), None);
        assert_eq!(patient_id_from_reference("Patient/a/_history/2"), None);
        assert_eq!(patient_id_from_reference("http://h/Patient/a"), None);
        assert_eq!(patient_id_from_reference("Patient/a?x=1"), None);
        assert_eq!(patient_id_from_reference("Group/a"), None);
        assert_eq!(patient_id_from_reference("Pat"), None);
        assert_eq!(patient_id_from_reference("Patienté/a"), None);
    }
}
