//! `JsonPathContent`: the original's first template type. JSONPath strings only, evaluated
//! against the matched token itself.

use iomt_model::spanned::{Node, ObjectReader};

use super::loader::ExpressionForm;
use super::{ContentTemplate, Loader, MatchContext, TemplateType};

pub(crate) const TYPE: TemplateType = TemplateType {
    name: "JsonPathContentTemplate",
    canonical: "JsonPathContent",
    load,
};

fn load(loader: &mut Loader<'_>, node: &Node) -> Option<ContentTemplate> {
    let mut r = ObjectReader::new(node)?;
    let form = ExpressionForm::LegacyString;
    let type_name = loader.required_string(&mut r, "typeName");
    if let Some((name, _)) = &type_name {
        loader.set_type_name(name);
    }
    // Required, but a blank one loads and fails every message (as in the original).
    let type_match = legacy_required(loader, &mut r, "typeMatchExpression");
    let device_id = legacy_required(loader, &mut r, "deviceIdExpression");
    let timestamp = legacy_required(loader, &mut r, "timestampExpression");
    let patient_id = loader.expression(&mut r, "patientIdExpression", false, form);
    let encounter_id = loader.expression(&mut r, "encounterIdExpression", false, form);
    let correlation_id = loader.expression(&mut r, "correlationIdExpression", false, form);
    let values = loader.values(&mut r, form).unwrap_or_default();
    loader.finish(&r, "a JsonPathContent template");
    let device_id = device_id?;
    let timestamp = timestamp?;
    Some(ContentTemplate {
        index: loader.index(),
        template_type: TYPE.canonical,
        pos: node.pos,
        type_name: type_name?.0,
        type_match: type_match?,
        device_id: device_id.into_iter().collect(),
        timestamp: timestamp.into_iter().collect(),
        patient_id,
        encounter_id,
        correlation_id,
        values,
        context: MatchContext::MatchedToken,
        members: Default::default(),
    })
}

/// A member that must be present (non-null) but may be blank, which leaves no expression:
/// `Some(None)` = present and blank, `None` = missing or invalid (error recorded).
pub(super) fn legacy_required(
    loader: &mut Loader<'_>,
    r: &mut ObjectReader<'_>,
    field: &str,
) -> Option<Option<super::TemplateExpr>> {
    match r.take_non_null(field) {
        None => {
            loader.required_string(r, field);
            None
        }
        Some((_, v)) => {
            let is_blank = v.as_str().is_some_and(|s| s.trim().is_empty());
            let expr = loader.expression_value(v, field, ExpressionForm::LegacyString);
            if expr.is_none() && !is_blank {
                return None;
            }
            Some(expr)
        }
    }
}
