//! `IotJsonPathContent`: messages routed from Azure IoT Hub. The device id and timestamp come
//! from the fixed places IoT Hub puts them (`SystemProperties.iothub-connection-device-id`;
//! `Properties.iothub-creation-time-utc`, falling back to `SystemProperties.iothub-enqueuedtime`).
//! Other expressions are JSONPath strings evaluated against the matched token, which should be
//! the whole event (`$..[?(@Body.heartRate)]`).

use iomt_expr::Language;
use iomt_model::spanned::{Node, ObjectReader};

use super::json_path::legacy_required;
use super::loader::ExpressionForm;
use super::{ContentTemplate, Loader, MatchContext, TemplateType, compile};

pub(crate) const TYPE: TemplateType = TemplateType {
    name: "IotJsonPathContentTemplate",
    canonical: "IotJsonPathContent",
    load,
};

/// Where IoT Hub puts the device id.
pub const DEVICE_ID: &str = "$.SystemProperties.iothub-connection-device-id";
/// Where IoT Hub puts the device's creation time.
pub const CREATION_TIME: &str = "$.Properties.iothub-creation-time-utc";
/// Where IoT Hub puts the enqueued time, used when the creation time is absent.
pub const ENQUEUED_TIME: &str = "$.SystemProperties.iothub-enqueuedtime";

fn load(loader: &mut Loader<'_>, node: &Node) -> Option<ContentTemplate> {
    load_fixed(
        loader,
        node,
        TYPE.canonical,
        &[DEVICE_ID],
        &[CREATION_TIME, ENQUEUED_TIME],
    )
}

/// Loads a legacy template whose device id and timestamp expressions are fixed.
pub(super) fn load_fixed(
    loader: &mut Loader<'_>,
    node: &Node,
    canonical: &'static str,
    device_id: &[&str],
    timestamp: &[&str],
) -> Option<ContentTemplate> {
    let mut r = ObjectReader::new(node)?;
    let form = ExpressionForm::LegacyString;
    let type_name = loader.required_string(&mut r, "typeName");
    if let Some((name, _)) = &type_name {
        loader.set_type_name(name);
    }
    // Required, but a blank one loads and fails every message (as in the original).
    let type_match = legacy_required(loader, &mut r, "typeMatchExpression");
    for field in ["deviceIdExpression", "timestampExpression"] {
        if let Some((key, _)) = r.take(field) {
            loader.warn(
                format!(
                    "{field} is ignored by {canonical}, which always uses {}",
                    if field == "deviceIdExpression" {
                        device_id.join(", then ")
                    } else {
                        timestamp.join(", then ")
                    }
                ),
                key.pos,
                Some(field),
            );
        }
    }
    let patient_id = loader.expression(&mut r, "patientIdExpression", false, form);
    let encounter_id = loader.expression(&mut r, "encounterIdExpression", false, form);
    let correlation_id = loader.expression(&mut r, "correlationIdExpression", false, form);
    let values = loader.values(&mut r, form).unwrap_or_default();
    loader.finish(&r, &format!("a {canonical} template"));
    let pos = node.pos;
    let fixed = |loader: &mut Loader<'_>, exprs: &[&str], field: &str| -> Vec<_> {
        exprs
            .iter()
            .filter_map(|e| compile(loader, e, Language::JsonPath, pos, field))
            .collect()
    };
    let device_id = fixed(loader, device_id, "deviceIdExpression");
    let timestamp = fixed(loader, timestamp, "timestampExpression");
    Some(ContentTemplate {
        index: loader.index(),
        template_type: canonical,
        pos,
        type_name: type_name?.0,
        type_match: type_match?,
        device_id,
        timestamp,
        patient_id,
        encounter_id,
        correlation_id,
        values,
        context: MatchContext::MatchedToken,
        members: Default::default(),
    })
}
