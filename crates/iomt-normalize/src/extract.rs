//! The extraction algorithm (SPEC §4.3): one template, one event token, zero or more
//! measurements.
//!
//! Order matters because it decides which error a user sees first: device id, timestamp,
//! correlation id (only when the template has one, then required), patient id, encounter id,
//! then each value in template order.
//!
//! # Member batch
//! A template's member-only JSONPath expressions (`$.matchedToken.heartRate`, `$.Body.x`) are
//! resolved together once per match, by the template's [`MemberBatch`], instead of one
//! `select_one` each: every expression then reads its node from the batch. The batch gives what
//! `select_one` gives (see `iomt_expr::jsonpath::MemberBatch`), and such expressions cannot fail,
//! so the order above and every error are unchanged.
//!
//! [`MemberBatch`]: iomt_expr::jsonpath::MemberBatch

use iomt_expr::jsonpath::MAX_BATCH_PATHS;
use iomt_expr::{Scalar, Scope, Value};
use iomt_model::{Measurement, MeasurementProperty};

use crate::convert::{self, ConvertError};
use crate::error::{NormalizeError, Origin};
use crate::template::{ContentTemplate, MatchContext, TemplateExpr};

/// Where a template's expressions are evaluated: the scope, and what its member batch found
/// there.
#[derive(Clone, Copy)]
struct At<'a, 'f> {
    scope: Scope<'a>,
    found: &'f [Option<&'a Value>],
}

impl ContentTemplate {
    fn origin(&self, pos: Option<iomt_model::spanned::Pos>) -> Origin {
        Origin {
            template_index: self.index,
            type_name: self.type_name.clone(),
            pos: pos.or(Some(self.pos)),
        }
    }

    fn eval<'a>(
        &self,
        expr: &TemplateExpr,
        at: At<'a, '_>,
        field: &str,
    ) -> Result<Option<Scalar<'a>>, NormalizeError> {
        if let Some(slot) = expr.member_slot {
            return Ok(at.found[slot].map(Scalar::from_value));
        }
        expr.expression
            .select_one(at.scope)
            .map_err(|source| NormalizeError::Expression {
                origin: self.origin(Some(expr.pos)),
                field: field.to_owned(),
                expression: expr.expression.text().to_owned(),
                source: Box::new(source),
            })
    }

    /// Tries each expression in turn; the first usable value wins.
    fn required<'a, T>(
        &self,
        exprs: &[TemplateExpr],
        at: At<'a, '_>,
        field: &str,
        convert: impl Fn(Scalar<'a>) -> Result<Option<T>, ConvertError>,
        is_blank: impl Fn(&T) -> bool,
    ) -> Result<T, NormalizeError> {
        let mut causes = Vec::new();
        for expr in exprs {
            let Some(found) = self.eval(expr, at, field)? else {
                continue;
            };
            match convert(found) {
                Ok(Some(v)) if !is_blank(&v) => return Ok(v),
                Ok(_) => causes.push(format!("a null or empty value was supplied for the required field [{field}]")),
                Err(e) => causes.push(format!(
                    "encountered an error while extracting value for [{field}] using expression {}: {}",
                    expr.expression.text(),
                    e.explain()
                )),
            }
        }
        Err(NormalizeError::RequiredValueMissing {
            origin: self.origin(exprs.first().map(|e| e.pos)),
            field: field.to_owned(),
            expressions: exprs
                .iter()
                .map(|e| e.expression.text().to_owned())
                .collect(),
            causes,
        })
    }

    fn required_text(
        &self,
        exprs: &[TemplateExpr],
        at: At<'_, '_>,
        field: &str,
    ) -> Result<String, NormalizeError> {
        self.required(
            exprs,
            at,
            field,
            |s| convert::to_text(s).map(|o| o.map(|c| c.into_owned())),
            |s: &String| convert::is_blank(s),
        )
    }

    fn optional_text(
        &self,
        expr: &Option<TemplateExpr>,
        at: At<'_, '_>,
        field: &str,
    ) -> Result<Option<String>, NormalizeError> {
        let Some(expr) = expr else { return Ok(None) };
        Ok(match self.eval(expr, at, field)? {
            None => None,
            // Optional values keep "" (only required checks blankness); unconvertible ones are dropped.
            Some(found) => convert::to_text(found)
                .ok()
                .flatten()
                .map(|c| c.into_owned()),
        })
    }

    /// Appends this template's measurements for `token` to `out`.
    pub fn extract(
        &self,
        token: &Value,
        out: &mut Vec<Measurement>,
    ) -> Result<usize, NormalizeError> {
        let Some(type_match) = &self.type_match else {
            return Err(NormalizeError::MissingTypeMatch {
                origin: self.origin(None),
            });
        };
        let with_match = self.context == MatchContext::RootWithMatchedToken;
        let scope = |matched| match self.context {
            MatchContext::MatchedToken => Scope::Token(matched),
            MatchContext::RootWithMatchedToken => Scope::WithMatch {
                root: token,
                matched,
            },
        };
        let mut found = [None; MAX_BATCH_PATHS];
        // The type match's scan can read the match's members the batch needs on its way.
        if let Some(names) = self.members.match_names(with_match)
            && let Some(matches) = type_match.expression.select_matches_capturing(token, names)
        {
            for (matched, captured) in matches.iter() {
                let scope = scope(*matched);
                self.members.resolve_captured(scope, captured, &mut found);
                self.measure(
                    At {
                        scope,
                        found: &found,
                    },
                    out,
                )?;
            }
            return Ok(matches.len());
        }
        let matches = type_match
            .expression
            .select_matches(token)
            .map_err(|source| NormalizeError::Expression {
                origin: self.origin(Some(type_match.pos)),
                field: "TypeMatchExpression".into(),
                expression: type_match.expression.text().to_owned(),
                source: Box::new(source),
            })?;
        for matched in &matches {
            let scope = scope(matched.value());
            self.members.resolve(scope, &mut found);
            self.measure(
                At {
                    scope,
                    found: &found,
                },
                out,
            )?;
        }
        Ok(matches.len())
    }

    /// Appends the measurement of one match (`at` is its scope) to `out`.
    fn measure(&self, at: At<'_, '_>, out: &mut Vec<Measurement>) -> Result<(), NormalizeError> {
        let device_id = self.required_text(&self.device_id, at, "DeviceIdExpression")?;
        let occurrence = self.required(
            &self.timestamp,
            at,
            "TimestampExpression",
            convert::to_timestamp,
            |_| false,
        )?;
        let correlation_id = match &self.correlation_id {
            Some(expr) => Some(self.required_text(
                std::slice::from_ref(expr),
                at,
                "CorrelationIdExpression",
            )?),
            None => None,
        };
        let patient_id = self.optional_text(&self.patient_id, at, "PatientIdExpression")?;
        let encounter_id = self.optional_text(&self.encounter_id, at, "EncounterIdExpression")?;
        let mut properties = Vec::with_capacity(self.values.len());
        for value in &self.values {
            let text = match (&value.expression, value.required) {
                (Some(expr), true) => {
                    Some(self.required_text(std::slice::from_ref(expr), at, &value.name)?)
                }
                (None, true) => {
                    return Err(NormalizeError::RequiredValueMissing {
                        origin: self.origin(None),
                        field: value.name.clone(),
                        expressions: Vec::new(),
                        causes: Vec::new(),
                    });
                }
                (expr, false) => {
                    // Borrow dance: optional_text takes &Option<TemplateExpr>.
                    match expr {
                        Some(e) => match self.eval(e, at, &value.name)? {
                            None => None,
                            Some(found) => convert::to_text(found)
                                .ok()
                                .flatten()
                                .map(|c| c.into_owned()),
                        },
                        None => None,
                    }
                }
            };
            if let Some(text) = text {
                properties.push(MeasurementProperty {
                    name: value.name.clone(),
                    value: text,
                });
            }
        }
        out.push(Measurement {
            type_name: self.type_name.clone(),
            occurrence_time_utc: occurrence,
            ingestion_time_utc: None,
            device_id,
            patient_id,
            encounter_id,
            correlation_id,
            properties,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iomt_expr::jsonpath::MemberBatch;

    use crate::{DeviceMapping, EnvelopeBuilder};

    /// The mapping with every template's member batch taken away: each expression evaluated on
    /// its own, the type match without capture.
    fn without_member_batch(text: &str) -> DeviceMapping {
        let mut mapping = DeviceMapping::from_json_str(text).unwrap();
        for template in mapping.templates_mut() {
            template.members = MemberBatch::new();
            let exprs = template
                .device_id
                .iter_mut()
                .chain(template.timestamp.iter_mut())
                .chain(template.correlation_id.iter_mut())
                .chain(template.patient_id.iter_mut())
                .chain(template.encounter_id.iter_mut())
                .chain(
                    template
                        .values
                        .iter_mut()
                        .filter_map(|v| v.expression.as_mut()),
                );
            for expr in exprs {
                expr.member_slot = None;
            }
        }
        mapping
    }

    /// Mappings whose expressions go through the member batch (and the type-match capture),
    /// next to ones that mix in expressions that do not.
    const MAPPINGS: &[&str] = &[
        r#"{"templateType": "CollectionContent", "template": [
          {"templateType": "CalculatedContent", "template": {
            "typeName": "hr", "typeMatchExpression": "$..[?(@heartRate)]",
            "deviceIdExpression": "$.matchedToken.deviceId",
            "patientIdExpression": "$.matchedToken.patientId",
            "encounterIdExpression": "$.Body.encounter",
            "correlationIdExpression": "$.matchedToken.session",
            "timestampExpression": "$.matchedToken.endDate",
            "values": [
              {"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true},
              {"valueName": "b", "valueExpression": "$.matchedToken.battery", "required": false},
              {"valueName": "n", "valueExpression": "$.matchedToken.nested.v", "required": false},
              {"valueName": "m", "valueExpression": "$.matchedToken", "required": false},
              {"valueName": "w", "valueExpression": "$.matchedToken.items[0]", "required": false}]}}]}"#,
        r#"{"templateType": "CollectionContent", "template": [
          {"templateType": "CalculatedContent", "template": {
            "typeName": "bp", "typeMatchExpression": "$..[?(@systolic && @diastolic)]",
            "deviceIdExpression": "$.Body.deviceId",
            "timestampExpression": "$.matchedToken.time",
            "values": [
              {"valueName": "s", "valueExpression": "$.matchedToken.systolic", "required": true},
              {"valueName": "d", "valueExpression": {"value": "matchedToken.diastolic", "language": "JmesPath"}, "required": true}]}},
          {"templateType": "CalculatedContent", "template": {
            "typeName": "any", "typeMatchExpression": "$.Body.readings[*]",
            "deviceIdExpression": "$.Body.deviceId",
            "timestampExpression": "$.matchedToken.time",
            "values": [{"valueName": "v", "valueExpression": "$.matchedToken.v", "required": false}]}}]}"#,
        r#"{"templateType": "CollectionContent", "template": [
          {"templateType": "IotJsonPathContent", "template": {
            "typeName": "hr", "typeMatchExpression": "$..[?(@Body.heartRate)]",
            "patientIdExpression": "$.Body.patientId",
            "values": [{"valueName": "hr", "valueExpression": "$.Body.heartRate", "required": true}]}},
          {"templateType": "JsonPathContent", "template": {
            "typeName": "x", "typeMatchExpression": "$..[?(@systolic)]",
            "deviceIdExpression": "$.deviceId", "timestampExpression": "$.time",
            "values": [{"valueName": "s", "valueExpression": "$.systolic", "required": true}]}}]}"#,
    ];

    /// Like the first mapping without its correlation id (which most messages lack).
    const PLAIN: &str = r#"{"templateType": "CollectionContent", "template": [
          {"templateType": "CalculatedContent", "template": {
            "typeName": "hr", "typeMatchExpression": "$..[?(@heartRate)]",
            "deviceIdExpression": "$.matchedToken.deviceId",
            "patientIdExpression": "$.matchedToken.patientId",
            "timestampExpression": "$.matchedToken.endDate",
            "values": [
              {"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true},
              {"valueName": "n", "valueExpression": "$.matchedToken.nested.v", "required": false}]}}]}"#;

    const MESSAGES: &[&str] = &[
        r#"{"deviceId":"d1","patientId":"p1","endDate":"2026-11-26T08:00:01.500Z","heartRate":72,"battery":0.87,"session":"s"}"#,
        r#"{"deviceId":"d1","deviceId":"d2","heartRate":72,"heartRate":73,"endDate":"2026-11-26T08:00:01Z","nested":{"v":1,"v":2},"items":[5]}"#,
        r#"{"a":[{"deviceId":"d1","heartRate":1,"endDate":"2026-11-26T08:00:01Z"},{"deviceId":"d2","heartRate":2,"endDate":"2026-11-26T08:00:02Z","x":{"heartRate":3,"deviceId":"d3","endDate":"2026-11-26T08:00:03Z"}}]}"#,
        r#"{"heartRate":null,"deviceId":" ","endDate":"2026-11-26"}"#,
        r#"{"heartRate":1,"endDate":"2026-11-26"}"#,
        r#"{"heartRate":1,"deviceId":"d","endDate":"yesterday"}"#,
        r#"{"heartRate":{"v":1},"deviceId":"d","endDate":"2026-11-26","matchedToken":{"heartRate":9}}"#,
        r#"{"systolic":120,"diastolic":80,"time":"2026-11-26T08:00:00Z","deviceId":"bp1","readings":[{"time":"2026-11-26T08:00:00Z","v":1},{"v":2}]}"#,
        r#"{"systolic":120,"time":"2026-11-26T08:00:00Z","deviceId":"bp1","s":{"systolic":1,"diastolic":2,"time":"2026-11-26T09:00:00Z"}}"#,
        r#"{"encounter":"e1","heartRate":70,"deviceId":"d","endDate":"2026-11-26T08:00:00+01:00","patientId":7}"#,
        r#"[{"heartRate":70,"deviceId":"d","endDate":"2026-11-26T08:00:00Z"}]"#,
        r#"7"#,
        r#"{}"#,
    ];

    #[test]
    fn the_member_batch_and_capture_change_no_result() {
        let properties = [(
            "iothub-creation-time-utc".to_owned(),
            serde_json::json!("2026-11-26T08:00:01.500Z"),
        )];
        let system = [(
            "iothub-connection-device-id".to_owned(),
            serde_json::json!("dev"),
        )];
        let mut envelope = EnvelopeBuilder::new();
        let (mut measured, mut failed) = (0, 0);
        for text in MAPPINGS.iter().chain([&PLAIN]) {
            let fast = DeviceMapping::from_json_str(text).unwrap();
            assert!(
                fast.templates().iter().any(|t| !t.members.is_empty()),
                "the mapping should use the member batch"
            );
            let slow = without_member_batch(text);
            for message in MESSAGES {
                for (p, s) in [(&properties[..], &system[..]), (&[], &[])] {
                    let token = envelope.build(message.as_bytes(), p, s).unwrap();
                    let result = fast.normalize(&token);
                    match &result {
                        Ok(m) => measured += m.len(),
                        Err(_) => failed += 1,
                    }
                    let a = format!("{result:?}");
                    let b = format!("{:?}", slow.normalize(&token));
                    assert_eq!(a, b, "{message} with {text}");
                }
            }
        }
        assert!(
            measured > 15 && failed > 10,
            "{measured} measurements, {failed} errors"
        );
    }
}
