//! Mappings built into the binary, so `iomt` runs with nothing but itself.

/// The wearable example device mapping (`examples/wearable/devicecontent.json`).
pub const DEVICE_MAPPING: &str = include_str!("../../../examples/wearable/devicecontent.json");
/// Where the embedded device mapping comes from, for messages.
pub const DEVICE_MAPPING_NAME: &str = "embedded examples/wearable/devicecontent.json";

/// The wearable example FHIR mapping (`examples/wearable/fhirmapping.json`), written for the
/// embedded device mapping: one template per type it produces.
pub const FHIR_MAPPING: &str = include_str!("../../../examples/wearable/fhirmapping.json");
/// Where the embedded FHIR mapping comes from, for messages.
pub const FHIR_MAPPING_NAME: &str = "embedded examples/wearable/fhirmapping.json";
