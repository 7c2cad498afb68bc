//! `CalculatedContent`: expressions in JSONPath or JMESPath (per expression or by
//! `defaultExpressionLanguage`), evaluated against the whole message with the match added as
//! `matchedToken`, so a template can combine values from the match and from its parents.

use iomt_model::ErrorClass;
use iomt_model::spanned::{Node, ObjectReader};

use super::loader::ExpressionForm;
use super::{ContentTemplate, Loader, MatchContext, TemplateType};

pub(crate) const TYPE: TemplateType = TemplateType {
    name: "CalculatedContent",
    canonical: "CalculatedContent",
    load,
};

fn load(loader: &mut Loader<'_>, node: &Node) -> Option<ContentTemplate> {
    let mut r = ObjectReader::new(node)?;
    let type_name = loader.required_string(&mut r, "typeName");
    if let Some((name, _)) = &type_name {
        loader.set_type_name(name);
    }
    let language = loader.language(&mut r, "defaultExpressionLanguage");
    let form = ExpressionForm::WithLanguage(language);
    let type_match = loader.expression(&mut r, "typeMatchExpression", true, form);
    let device_id = loader.expression(&mut r, "deviceIdExpression", true, form);
    let timestamp = loader.expression(&mut r, "timestampExpression", true, form);
    let patient_id = loader.expression(&mut r, "patientIdExpression", false, form);
    let encounter_id = loader.expression(&mut r, "encounterIdExpression", false, form);
    let correlation_id = loader.expression(&mut r, "correlationIdExpression", false, form);
    let values = loader.values(&mut r, form);
    if values.is_none() {
        // The original crashes on this (a NullReferenceException aborts the whole mapping);
        // say what to do instead.
        loader.error(
            ErrorClass::InvalidTemplateException,
            "required property 'Values' not found in json; a CalculatedContent template needs \"values\" (use [] for none)".into(),
            r.pos(),
            Some("values"),
        );
    }
    loader.finish(&r, "a CalculatedContent template");
    Some(ContentTemplate {
        index: loader.index(),
        template_type: TYPE.canonical,
        pos: node.pos,
        type_name: type_name?.0,
        type_match: Some(type_match?),
        device_id: vec![device_id?],
        timestamp: vec![timestamp?],
        patient_id,
        encounter_id,
        correlation_id,
        values: values?,
        context: MatchContext::RootWithMatchedToken,
        members: Default::default(),
    })
}
