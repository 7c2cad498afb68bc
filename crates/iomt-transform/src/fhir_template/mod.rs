//! FHIR mapping templates (`fhirmapping.json`): the model, and the lookup by measurement type.
//!
//! # Extending
//! Each template kind is one module implementing [`FhirTemplate`] (today only
//! [`code_value`]); loading finds the kind by its `templateType` in one registry table. Adding a
//! kind is a new module plus one line in that table — nothing else dispatches on the kind.
//!
//! # What must hold
//! * Type names are unique case-insensitively and never blank; lookup is case-insensitive
//!   (`.NET InvariantCultureIgnoreCase` in the original, Unicode lowercase here).
//! * A template is immutable once built and shared (`Arc`) between the windower and the
//!   transformation workers.

pub mod code_value;
mod load;
pub mod value;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::error::TransformError;
pub use crate::group::PeriodInterval;
use crate::group::{ObservationGroup, WindowSpec, WindowSpecSource};
use crate::observation::model::Observation;
use crate::observation::{JsonMergeOutcome, MergeOutcome};
pub use code_value::{CodeValueFhirTemplate, CodeValueMapping};
pub use value::{
    CodeableConceptValueType, FhirValueType, QuantityValueType, SampledDataValueType,
    StringValueType,
};

/// One FHIR template kind: how groups of one measurement type become Observations.
pub trait FhirTemplate: fmt::Debug + Send + Sync + 'static {
    /// The measurement type it maps.
    fn type_name(&self) -> &str;

    /// How measurements of the type are windowed.
    fn window_spec(&self) -> WindowSpec;

    /// The measurement properties the template reads (value and component value names), for
    /// compatibility checks between device and FHIR mappings.
    fn value_names(&self) -> Vec<&str>;

    /// Builds the Observation for `group` (create path, SPEC §7.2), without identity; add it
    /// with [`Observation::with_identity`]. The Observation borrows text from the template and
    /// the group (`'a`): serialize it while both are at hand.
    ///
    /// # Errors
    /// A [`TransformError`] when the group's values do not fit the template (e.g. two values
    /// for a Quantity).
    fn create_observation<'a>(
        &'a self,
        group: &'a ObservationGroup,
        issued: DateTime<Utc>,
    ) -> Result<Observation<'a>, TransformError>;

    /// Merges `group` into an Observation read from the server (SPEC §8).
    ///
    /// # Errors
    /// A [`TransformError`] when the existing Observation cannot take the group's values (e.g.
    /// another value type).
    fn merge_observation(
        &self,
        existing: &serde_json::Value,
        group: &ObservationGroup,
    ) -> Result<MergeOutcome, TransformError>;

    /// [`merge_observation`](Self::merge_observation) on the Observation's JSON text, where
    /// that gives exactly the same result without parsing it (a SampledData group inside the
    /// period of its hour or day Observation; see `observation::merge_json`). `None`
    /// otherwise: then parse the text and call `merge_observation`. The result's `meta` is
    /// the existing one.
    fn merge_observation_json(
        &self,
        existing: &[u8],
        group: &ObservationGroup,
    ) -> Option<JsonMergeOutcome> {
        let _ = (existing, group);
        None
    }

    /// The concrete template, for callers that inspect a kind's details.
    fn as_any(&self) -> &dyn Any;
}

/// Why a template could not be added to a [`FhirTemplates`] set.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another template has the same type name (case-insensitively).
    #[error(
        "duplicate template defined for type name: '{type_name}'; each typeName may appear once (compared case-insensitively)"
    )]
    Duplicate {
        /// The type name.
        type_name: String,
    },
    /// The type name is blank.
    #[error("empty type name is not allowed: '{type_name}'; set typeName to the measurement type")]
    Empty {
        /// The type name.
        type_name: String,
    },
}

/// The FHIR templates of one mapping, looked up by measurement type case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct FhirTemplates {
    templates: Vec<Arc<dyn FhirTemplate>>,
    index: HashMap<String, usize>,
    warnings: Vec<crate::error::TemplateError>,
}

fn fold(name: &str) -> std::borrow::Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.to_lowercase())
    }
}

impl FhirTemplates {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a template.
    ///
    /// # Errors
    /// [`RegisterError`] when its type name is blank or already taken.
    pub fn insert(&mut self, template: Arc<dyn FhirTemplate>) -> Result<(), RegisterError> {
        let name = template.type_name();
        if name.trim().is_empty() {
            return Err(RegisterError::Empty {
                type_name: name.to_owned(),
            });
        }
        let key = fold(name).into_owned();
        if self.index.contains_key(&key) {
            return Err(RegisterError::Duplicate {
                type_name: name.to_owned(),
            });
        }
        self.index.insert(key, self.templates.len());
        self.templates.push(template);
        Ok(())
    }

    /// The template for a measurement type (case-insensitive).
    pub fn get(&self, type_name: &str) -> Option<&Arc<dyn FhirTemplate>> {
        self.index
            .get(fold(type_name).as_ref())
            .map(|&i| &self.templates[i])
    }

    /// The template for a measurement type.
    ///
    /// # Errors
    /// [`TransformError::TemplateNotFound`] when there is none.
    pub fn require(&self, type_name: &str) -> Result<&Arc<dyn FhirTemplate>, TransformError> {
        self.get(type_name)
            .ok_or_else(|| TransformError::TemplateNotFound {
                type_name: type_name.to_owned(),
            })
    }

    /// The templates, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn FhirTemplate>> {
        self.templates.iter()
    }

    /// How many templates there are.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

impl WindowSpecSource for FhirTemplates {
    fn window_spec(&self, type_name: &str) -> Result<WindowSpec, TransformError> {
        self.require(type_name).map(|t| t.window_spec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_unique() {
        let mut set = FhirTemplates::new();
        set.insert(Arc::new(CodeValueFhirTemplate::new("HeartRate", vec![])))
            .unwrap();
        assert!(set.get("heartrate").is_some());
        assert!(set.get("HEARTRATE").is_some());
        assert!(set.get("steps").is_none());
        assert_eq!(
            set.insert(Arc::new(CodeValueFhirTemplate::new("heartRATE", vec![]))),
            Err(RegisterError::Duplicate {
                type_name: "heartRATE".into()
            })
        );
        assert!(matches!(
            set.insert(Arc::new(CodeValueFhirTemplate::new(" ", vec![]))),
            Err(RegisterError::Empty { .. })
        ));
        assert_eq!(
            set.require("x").unwrap_err().class(),
            iomt_model::ErrorClass::TemplateNotFoundException
        );
        let t = set.get("heartrate").unwrap();
        assert!(t.as_any().downcast_ref::<CodeValueFhirTemplate>().is_some());
    }
}
