//! The normalization workload that `benches/normalize.rs` times and
//! `examples/profile_normalize.rs` profiles (the example includes this file by path): the
//! device mappings and the two message sizes.

/// CalculatedContent with JSONPath expressions.
pub const CALCULATED_JSONPATH: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {
    "typeName": "heartrate", "typeMatchExpression": "$..[?(@heartRate)]",
    "deviceIdExpression": "$.matchedToken.deviceId", "patientIdExpression": "$.matchedToken.patientId",
    "timestampExpression": "$.matchedToken.endDate",
    "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true}]}}]}"#;

/// The same template with JMESPath expressions.
pub const CALCULATED_JMESPATH: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {
    "typeName": "heartrate", "defaultExpressionLanguage": "JmesPath",
    "typeMatchExpression": "[Body][?heartRate]",
    "deviceIdExpression": "matchedToken.deviceId", "patientIdExpression": "matchedToken.patientId",
    "timestampExpression": "matchedToken.endDate",
    "values": [{"valueName": "hr", "valueExpression": "matchedToken.heartRate", "required": true}]}}]}"#;

/// IotJsonPathContent, for messages with IoT Hub properties.
pub const IOT_HUB: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "IotJsonPathContent", "template": {
    "typeName": "heartrate", "typeMatchExpression": "$..[?(@Body.heartRate)]",
    "patientIdExpression": "$.Body.patientId",
    "values": [{"valueName": "hr", "valueExpression": "$.Body.heartRate", "required": true}]}}]}"#;

/// A ~300-byte wearable message.
pub fn small_message() -> String {
    r#"{"deviceId":"wristband-000123","patientId":"patient-000456","endDate":"2026-11-26T08:00:01.500Z","heartRate":72,"battery":0.87,"firmware":"4.2.1-build.7781","model":"WB-200","signalQuality":"good","wornOnWrist":"left","sequence":1234567,"session":"6f1c2b7e-0d7a-4c1e-9a55-2f4c8e1b9d10"}"#
        .to_owned()
}

/// A ~2 KB message: the same reading plus a realistic amount of device metadata.
pub fn large_message() -> String {
    let mut extra = String::new();
    for i in 0..19 {
        extra.push_str(&format!(
            r#","diag{i:02}":{{"sensor":"ppg-{i}","gain":{},"offset":-{}.25,"ok":true,"note":"calibrated at factory"}}"#,
            i * 3 + 1,
            i
        ));
    }
    format!(
        r#"{{"deviceId":"wristband-000123","patientId":"patient-000456","endDate":"2026-11-26T08:00:01.500Z","heartRate":72{extra}}}"#
    )
}
