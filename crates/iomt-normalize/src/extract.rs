//! The extraction algorithm (SPEC §4.3): one template, one event token, zero or more
//! measurements.
//!
//! Order matters because it decides which error a user sees first: device id, timestamp,
//! correlation id (only when the template has one, then required), patient id, encounter id,
//! then each value in template order.

use iomt_expr::{Scalar, Scope, Value};
use iomt_model::{Measurement, MeasurementProperty};

use crate::convert::{self, ConvertError};
use crate::error::{NormalizeError, Origin};
use crate::template::{ContentTemplate, MatchContext, TemplateExpr};

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
        scope: Scope<'a>,
        field: &str,
    ) -> Result<Option<Scalar<'a>>, NormalizeError> {
        expr.expression
            .select_one(scope)
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
        scope: Scope<'a>,
        field: &str,
        convert: impl Fn(Scalar<'a>) -> Result<Option<T>, ConvertError>,
        is_blank: impl Fn(&T) -> bool,
    ) -> Result<T, NormalizeError> {
        let mut causes = Vec::new();
        for expr in exprs {
            let Some(found) = self.eval(expr, scope, field)? else {
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
        scope: Scope<'_>,
        field: &str,
    ) -> Result<String, NormalizeError> {
        self.required(
            exprs,
            scope,
            field,
            |s| convert::to_text(s).map(|o| o.map(|c| c.into_owned())),
            |s: &String| s.trim().is_empty(),
        )
    }

    fn optional_text(
        &self,
        expr: &Option<TemplateExpr>,
        scope: Scope<'_>,
        field: &str,
    ) -> Result<Option<String>, NormalizeError> {
        let Some(expr) = expr else { return Ok(None) };
        Ok(match self.eval(expr, scope, field)? {
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
            let scope = match self.context {
                MatchContext::MatchedToken => Scope::Token(matched.value()),
                MatchContext::RootWithMatchedToken => Scope::WithMatch {
                    root: token,
                    matched: matched.value(),
                },
            };
            let device_id = self.required_text(&self.device_id, scope, "DeviceIdExpression")?;
            let occurrence = self.required(
                &self.timestamp,
                scope,
                "TimestampExpression",
                convert::to_timestamp,
                |_| false,
            )?;
            let correlation_id = match &self.correlation_id {
                Some(expr) => Some(self.required_text(
                    std::slice::from_ref(expr),
                    scope,
                    "CorrelationIdExpression",
                )?),
                None => None,
            };
            let patient_id = self.optional_text(&self.patient_id, scope, "PatientIdExpression")?;
            let encounter_id =
                self.optional_text(&self.encounter_id, scope, "EncounterIdExpression")?;
            let mut properties = Vec::with_capacity(self.values.len());
            for value in &self.values {
                let text = match (&value.expression, value.required) {
                    (Some(expr), true) => {
                        Some(self.required_text(std::slice::from_ref(expr), scope, &value.name)?)
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
                            Some(e) => match self.eval(e, scope, &value.name)? {
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
        }
        Ok(matches.len())
    }
}
