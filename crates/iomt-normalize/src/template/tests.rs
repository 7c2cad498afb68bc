//! Loading: strictness, positions, every error at once, name rules.

use super::*;

fn errors_of(text: &str) -> Vec<TemplateError> {
    DeviceMapping::load_lenient(text).1
}

fn collection(inner: &str) -> String {
    format!("{{\"templateType\": \"CollectionContent\", \"template\": [{inner}]}}")
}

#[test]
fn accepts_the_original_name_spellings() {
    for (t, ok) in [
        ("JsonPathContent", true),
        ("jsonpathcontenttemplate", true),
        ("IotJsonPathContentTemplate", true),
        ("IotCentralJsonPathContent", true),
        ("IotCentralJsonPathContentTemplate", false),
        ("CalculatedContent", true),
        ("CalculatedContentTemplate", false),
        ("Nonsense", false),
    ] {
        let accepted = REGISTRY.iter().any(|r| r.accepts(t));
        assert_eq!(accepted, ok, "{t}");
    }
    assert!(name_matches(COLLECTION, "collectionContent"));
    assert!(name_matches(COLLECTION, "CollectionContentTemplate"));
}

#[test]
fn reports_every_error_with_template_field_and_position() {
    let text = collection(
        r#"
    {"templateType": "CalculatedContent", "template": {
        "typeName": "hr",
        "typeMatchExpressionFake": "$..[?(@hr)]",
        "timestampExpression": "$.t",
        "values": []}},
    {"templateType": "JsonPathContent", "template": {
        "typeMatchExpression": "$..[?(@x)]",
        "deviceIdExpression": "$.d[",
        "timestampExpression": "$.t"}},
    {"templateType": "Mystery", "template": {}}"#,
    );
    let errors = errors_of(&text);
    let summary: Vec<_> = errors
        .iter()
        .map(|e| {
            (
                e.template_index,
                e.field.clone().unwrap_or_default(),
                e.pos.map(|p| p.line),
            )
        })
        .collect();
    assert!(
        summary.contains(&(Some(0), "typeMatchExpressionFake".into(), Some(4))),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(Some(0), "typeMatchExpression".into(), Some(2))),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(Some(0), "deviceIdExpression".into(), Some(2))),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(Some(1), "typeName".into(), Some(7))),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(Some(1), "deviceIdExpression".into(), Some(9))),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(Some(2), "templateType".into(), Some(11))),
        "{summary:?}"
    );
    assert_eq!(errors.len(), 6, "{errors:#?}");
    let first = errors
        .iter()
        .find(|e| e.field.as_deref() == Some("typeMatchExpressionFake"))
        .unwrap();
    assert_eq!(first.type_name.as_deref(), Some("hr"));
    assert!(
        first
            .to_string()
            .starts_with("template 0 (hr), field typeMatchExpressionFake, line 4, column 9: "),
        "{first}"
    );
    assert!(DeviceMapping::from_json_str(&text).is_err());
}

#[test]
fn expression_objects_take_the_template_default_language() {
    let text = collection(
        r#"{"templateType": "CalculatedContent", "template": {
        "typeName": "hr", "defaultExpressionLanguage": "JmesPath",
        "typeMatchExpression": "to_array(@)[?hr]",
        "deviceIdExpression": {"value": "$.d", "language": "JsonPath"},
        "timestampExpression": {"value": "t"},
        "values": [{"valueName": "hr", "valueExpression": "hr", "required": "true"}]}}"#,
    );
    let mapping = DeviceMapping::from_json_str(&text).unwrap();
    let t = &mapping.templates()[0];
    assert_eq!(
        t.type_match.as_ref().unwrap().expression.language(),
        Language::JmesPath
    );
    assert_eq!(t.device_id[0].expression.language(), Language::JsonPath);
    assert_eq!(t.timestamp[0].expression.language(), Language::JmesPath);
    assert!(t.values[0].required);
}

#[test]
fn bad_jmespath_is_a_load_error_at_its_position() {
    let text = collection(
        r#"{"templateType": "CalculatedContent", "template": {
        "typeName": "hr", "typeMatchExpression": {"value": "add(a", "language": "JmesPath"},
        "deviceIdExpression": "$.d", "timestampExpression": "$.t", "values": []}}"#,
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field.as_deref(), Some("typeMatchExpression"));
    assert_eq!(errors[0].pos.unwrap().line, 2);
}

#[test]
fn iot_types_ignore_device_and_timestamp_expressions_with_a_warning() {
    let text = collection(
        r#"{"templateType": "IotJsonPathContent", "template": {
        "typeName": "hr", "typeMatchExpression": "$..[?(@Body.hr)]",
        "deviceIdExpression": "$.Body.d",
        "values": [{"valueName": "hr", "valueExpression": "$.Body.hr", "required": true}]}}"#,
    );
    let (mapping, errors) = DeviceMapping::load_lenient(&text);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(mapping.warnings().len(), 1);
    let t = &mapping.templates()[0];
    assert_eq!(t.device_id[0].expression.text(), iot_hub::DEVICE_ID);
    assert_eq!(t.timestamp.len(), 2);
}

#[test]
fn calculated_content_without_values_is_an_error_not_a_crash() {
    let text = collection(
        r#"{"templateType": "CalculatedContent", "template": {
        "typeName": "hr", "typeMatchExpression": "$..[?(@hr)]",
        "deviceIdExpression": "$.d", "timestampExpression": "$.t"}}"#,
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("'Values'"), "{}", errors[0]);
}

#[test]
fn root_errors() {
    assert!(errors_of("[]")[0].message.contains("actual Not Found"));
    assert!(
        errors_of(r#"{"templateType": "CollectionFhir", "template": []}"#)[0]
            .message
            .contains("actual CollectionFhir")
    );
    assert!(
        errors_of(r#"{"templateType": "CollectionContent", "template": {}}"#)[0]
            .message
            .contains("expected an array")
    );
    assert!(errors_of("{").len() == 1);
    assert!(errors_of(r#"{"templateType": "CollectionContent", "template": []}"#).is_empty());
}
