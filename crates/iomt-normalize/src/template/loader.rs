//! Field-by-field reading of one template object, collecting every error.

use iomt_expr::Language;
use iomt_model::ErrorClass;
use iomt_model::spanned::{Node, NodeValue, ObjectReader, Pos};

use super::{TemplateExpr, ValueTemplate, compile};
use crate::error::TemplateError;

/// Reads one template, recording errors and warnings with the template's index and name.
pub struct Loader<'a> {
    errors: &'a mut Vec<TemplateError>,
    warnings: &'a mut Vec<TemplateError>,
    index: usize,
    type_name: Option<String>,
}

/// How expression members are written in a template type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpressionForm {
    /// Plain JSONPath strings; blank strings mean "no expression" (the legacy types).
    LegacyString,
    /// A string, or `{"value": …, "language": …}`, in the template's default language.
    WithLanguage(Language),
}

fn pascal(field: &str) -> String {
    let mut c = field.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl<'a> Loader<'a> {
    /// A loader for template number `index`.
    pub fn new(
        errors: &'a mut Vec<TemplateError>,
        warnings: &'a mut Vec<TemplateError>,
        index: usize,
    ) -> Loader<'a> {
        Loader {
            errors,
            warnings,
            index,
            type_name: None,
        }
    }

    /// The template's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Records the `typeName` once known, so later errors name it.
    pub fn set_type_name(&mut self, name: &str) {
        self.type_name = Some(name.to_owned());
    }

    fn make(
        &self,
        class: ErrorClass,
        message: String,
        pos: Pos,
        field: Option<&str>,
    ) -> TemplateError {
        TemplateError {
            class,
            message,
            pos: Some(pos),
            template_index: Some(self.index),
            type_name: self.type_name.clone(),
            field: field.map(str::to_owned),
        }
    }

    /// Records an error.
    pub fn error(&mut self, class: ErrorClass, message: String, pos: Pos, field: Option<&str>) {
        let e = self.make(class, message, pos, field);
        self.errors.push(e);
    }

    /// Records a warning: the template loads, but something in it is ignored.
    pub fn warn(&mut self, message: String, pos: Pos, field: Option<&str>) {
        let e = self.make(ErrorClass::InvalidTemplateException, message, pos, field);
        self.warnings.push(e);
    }

    fn missing(&mut self, reader: &ObjectReader<'_>, field: &str) {
        self.error(
            ErrorClass::InvalidTemplateException,
            format!(
                "required property '{}' not found in json; add \"{field}\" to the template",
                pascal(field)
            ),
            reader.pos(),
            Some(field),
        );
    }

    /// Reports every member that no field took.
    pub fn finish(&mut self, reader: &ObjectReader<'_>, context: &str) {
        let unknown: Vec<_> = reader.unknown().cloned().collect();
        for key in unknown {
            self.error(
                ErrorClass::InvalidTemplateException,
                format!(
                    "could not find member '{}' on {context}; remove it or fix its spelling",
                    key.name
                ),
                key.pos,
                Some(&key.name),
            );
        }
    }

    /// A required, non-null string member.
    pub fn required_string(
        &mut self,
        reader: &mut ObjectReader<'_>,
        field: &str,
    ) -> Option<(String, Pos)> {
        match reader.take_non_null(field) {
            None => {
                self.missing(reader, field);
                None
            }
            Some((_, v)) => self.string_value(v, field).map(|s| (s, v.pos)),
        }
    }

    /// An optional string member (`null` is absent).
    pub fn optional_string(
        &mut self,
        reader: &mut ObjectReader<'_>,
        field: &str,
    ) -> Option<(String, Pos)> {
        let (_, v) = reader.take_non_null(field)?;
        self.string_value(v, field).map(|s| (s, v.pos))
    }

    fn string_value(&mut self, v: &Node, field: &str) -> Option<String> {
        match &v.value {
            NodeValue::String(s) => Some(s.clone()),
            // Newtonsoft converts scalars to strings where a string is expected.
            NodeValue::Number(n) => Some(n.clone()),
            NodeValue::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
            _ => {
                self.error(
                    ErrorClass::InvalidTemplateException,
                    format!("{field} must be a string, got {}", v.kind()),
                    v.pos,
                    Some(field),
                );
                None
            }
        }
    }

    /// A boolean member that also accepts `"true"`/`"false"` strings, as Newtonsoft does.
    pub fn optional_bool(&mut self, reader: &mut ObjectReader<'_>, field: &str) -> bool {
        let Some((_, v)) = reader.take_non_null(field) else {
            return false;
        };
        match &v.value {
            NodeValue::Bool(b) => *b,
            NodeValue::String(s) if s.trim().eq_ignore_ascii_case("true") => true,
            NodeValue::String(s) if s.trim().eq_ignore_ascii_case("false") => false,
            _ => {
                self.error(
                    ErrorClass::InvalidTemplateException,
                    format!("{field} must be true or false, got {}", v.kind()),
                    v.pos,
                    Some(field),
                );
                false
            }
        }
    }

    /// The default expression language member (`JsonPath` when absent).
    pub fn language(&mut self, reader: &mut ObjectReader<'_>, field: &str) -> Language {
        let Some((_, v)) = reader.take_non_null(field) else {
            return Language::JsonPath;
        };
        match v.as_str().and_then(Language::parse) {
            Some(l) => l,
            None => {
                self.error(
                    ErrorClass::InvalidTemplateException,
                    format!("{field} must be \"JsonPath\" or \"JmesPath\""),
                    v.pos,
                    Some(field),
                );
                Language::JsonPath
            }
        }
    }

    /// An expression member. `Ok(None)`-like results: `None` when absent, blank (legacy) or
    /// invalid (the error is recorded; `present` tells the caller whether it was written).
    pub fn expression(
        &mut self,
        reader: &mut ObjectReader<'_>,
        field: &str,
        required: bool,
        form: ExpressionForm,
    ) -> Option<TemplateExpr> {
        let Some((_, v)) = reader.take_non_null(field) else {
            if required {
                self.missing(reader, field);
            }
            return None;
        };
        self.expression_value(v, field, form)
    }

    /// Reads an expression from a node.
    pub fn expression_value(
        &mut self,
        v: &Node,
        field: &str,
        form: ExpressionForm,
    ) -> Option<TemplateExpr> {
        match form {
            ExpressionForm::LegacyString => {
                let text = self.string_value(v, field)?;
                if text.trim().is_empty() {
                    return None;
                }
                compile(self, &text, Language::JsonPath, v.pos, field)
            }
            ExpressionForm::WithLanguage(default) => match &v.value {
                NodeValue::Object(_) => {
                    let mut obj = ObjectReader::new(v)?;
                    let value = obj.take_non_null("value");
                    let language = match obj.take_non_null("language") {
                        None => default,
                        Some((_, l)) => match l.as_str().and_then(Language::parse) {
                            Some(l) => l,
                            None => {
                                self.error(
                                    ErrorClass::InvalidTemplateException,
                                    format!(
                                        "{field}.language must be \"JsonPath\" or \"JmesPath\""
                                    ),
                                    l.pos,
                                    Some(field),
                                );
                                default
                            }
                        },
                    };
                    self.finish(&obj, &format!("the expression object of {field}"));
                    let Some((_, value)) = value else {
                        self.error(
                            ErrorClass::InvalidTemplateException,
                            format!("required property 'Value' not found in json; add \"value\" to {field}"),
                            v.pos,
                            Some(field),
                        );
                        return None;
                    };
                    let text = self.string_value(value, field)?;
                    compile(self, &text, language, value.pos, field)
                }
                _ => {
                    let text = self.string_value(v, field)?;
                    compile(self, &text, default, v.pos, field)
                }
            },
        }
    }

    /// The `values` array; `None` when absent.
    pub fn values(
        &mut self,
        reader: &mut ObjectReader<'_>,
        form: ExpressionForm,
    ) -> Option<Vec<ValueTemplate>> {
        let (_, v) = reader.take_non_null("values")?;
        let Some(items) = v.as_array() else {
            self.error(
                ErrorClass::InvalidTemplateException,
                format!("values must be an array, got {}", v.kind()),
                v.pos,
                Some("values"),
            );
            return Some(Vec::new());
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(mut r) = ObjectReader::new(item) else {
                self.error(
                    ErrorClass::InvalidTemplateException,
                    format!("values[{i}] must be an object with valueName and valueExpression"),
                    item.pos,
                    Some("values"),
                );
                continue;
            };
            let name = self.required_string(&mut r, "valueName");
            let expression = self.expression(&mut r, "valueExpression", true, form);
            let required = self.optional_bool(&mut r, "required");
            self.finish(&r, &format!("values[{i}]"));
            if let Some((name, _)) = name {
                out.push(ValueTemplate {
                    name,
                    expression,
                    required,
                });
            }
        }
        Some(out)
    }
}
