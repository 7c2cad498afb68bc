//! Searching: every page of a search, and exact identifier matching.
//!
//! # Why exact matching
//! A token search (`identifier=system|value`) is only as exact as the server's index: some
//! servers compare only the first 128 characters of a value (the original connector's reason for
//! filtering, SPEC §8), some fold case, and a search by value alone (`identifier=value`, how
//! the connector looks up Observations by default) matches that value in any system. The
//! connector's Observation identifiers are long and share long prefixes, so every result is
//! checked again here: a resource matches only if one of its identifiers has exactly the value
//! (and, when one is given, exactly the system).
//!
//! # What must hold
//! * All pages are read: `next` links are followed until there are none. A `next` link to
//!   another origin than the base URL is an error, never followed, so a token is not sent to
//!   a host the configuration does not name.
//! * A search whose `Bundle.total` says more matched than its pages returned (a server that
//!   pages without `next` links) is an error rather than a short answer: a missed Observation
//!   would be overwritten by a create.
//! * Entries with `search.mode` `include` or `outcome` are not results.
//! * Search values are escaped as FHIR requires (`\`, `|`, `,`, `$`), so an identifier that
//!   contains them is searched for literally.

use reqwest::Method;
use serde_json::Value;
use url::Url;

use crate::error::{FhirClientError, Interaction, Operation};
use crate::http::{FhirClient, FhirRequest, parse_json};

const FORM: reqwest::header::HeaderValue =
    reqwest::header::HeaderValue::from_static("application/x-www-form-urlencoded");

/// The most pages read for one search; a server looping its `next` links ends here.
const MAX_PAGES: usize = 1000;

/// Escapes a search value: `\` `|` `,` `$` get a backslash (FHIR R4 §3.1.1.5.7).
pub fn escape_search_value(value: &str) -> String {
    if !needs_escape(value) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `value` has a character [`escape_search_value`] escapes (a byte scan: the
/// characters are ASCII, and no UTF-8 continuation byte equals one of them).
fn needs_escape(value: &str) -> bool {
    value
        .bytes()
        .any(|b| matches!(b, b'\\' | b'|' | b',' | b'$'))
}

/// Appends `value`, escaped as a search value and then form-urlencoded, to `form`: one pass
/// and no intermediate strings in the common case of a value with nothing to escape.
pub(crate) fn push_form_search_value(form: &mut String, value: &str) {
    if needs_escape(value) {
        form.extend(url::form_urlencoded::byte_serialize(
            escape_search_value(value).as_bytes(),
        ));
    } else if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_'))
    {
        // Nothing to encode (what `byte_serialize` leaves as it is), as identifier values
        // made of ids, type names and times are.
        form.push_str(value);
    } else {
        form.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
    }
}

/// A token search value for an identifier: `value`, or `system|value` when a system is given.
pub fn identifier_token(system: Option<&str>, value: &str) -> String {
    match system {
        Some(system) => format!(
            "{}|{}",
            escape_search_value(system),
            escape_search_value(value)
        ),
        None => escape_search_value(value),
    }
}

/// Whether `resource` has an identifier with exactly `value` and, when given, exactly
/// `system`.
pub fn has_identifier(resource: &Value, system: Option<&str>, value: &str) -> bool {
    resource
        .get("identifier")
        .and_then(Value::as_array)
        .is_some_and(|ids| {
            ids.iter().any(|id| {
                id.get("value").and_then(Value::as_str) == Some(value)
                    && system.is_none_or(|s| id.get("system").and_then(Value::as_str) == Some(s))
            })
        })
}

impl FhirClient {
    /// Searches `resource_type` with `params` (names and unescaped-by-URL values), reading every
    /// page, and returns the matched resources.
    ///
    /// # Errors
    /// A request failure, a response that is not a search Bundle, a `next` link to another
    /// origin, or fewer results than the Bundle's `total`.
    pub async fn search(
        &self,
        resource_type: &'static str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Value>, FhirClientError> {
        self.search_with(resource_type, params, None).await
    }

    /// As [`search`](Self::search), but the first page is asked for with
    /// `POST [base]/{type}/_search` and the parameters in a form body: no URL length limit, for
    /// searches with many values (`identifier=a,b,c,…`). Later pages follow `next` links.
    ///
    /// # Errors
    /// As [`search`](Self::search).
    pub async fn search_post(
        &self,
        resource_type: &'static str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Value>, FhirClientError> {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.extend_pairs(params.iter());
        self.search_post_form(resource_type, body.finish()).await
    }

    /// As [`search_post`](Self::search_post), with the form body already encoded
    /// (`application/x-www-form-urlencoded`).
    pub(crate) async fn search_post_form(
        &self,
        resource_type: &'static str,
        form: String,
    ) -> Result<Vec<Value>, FhirClientError> {
        self.search_with(resource_type, &[], Some(bytes::Bytes::from(form)))
            .await
    }

    /// Searches with `params` in the query, or, with `form`, with `POST …/_search`.
    async fn search_with(
        &self,
        resource_type: &'static str,
        params: &[(&str, &str)],
        mut form: Option<bytes::Bytes>,
    ) -> Result<Vec<Value>, FhirClientError> {
        let operation = Operation::new(Interaction::Search, resource_type);
        let mut url = if form.is_some() {
            self.url(&[resource_type, "_search"])
        } else {
            let mut url = self.url(&[resource_type]);
            url.query_pairs_mut().extend_pairs(params.iter());
            url
        };
        let mut results = Vec::new();
        let mut total = None;
        let mut seen: Vec<Url> = Vec::new();
        for page in 0..MAX_PAGES {
            let body = form.take();
            let response = self
                .execute(FhirRequest {
                    operation,
                    method: if body.is_some() {
                        Method::POST
                    } else {
                        Method::GET
                    },
                    url: url.clone(),
                    content_type: FORM,
                    body,
                    if_match: None,
                    accept: &[],
                    prefer: None,
                })
                .await?;
            let mut bundle = parse_json(operation, &response.body)?;
            if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
                return Err(FhirClientError::InvalidResponse {
                    operation,
                    reason: "a search answered with something other than a Bundle".into(),
                });
            }
            if page == 0 {
                total = bundle.get("total").and_then(Value::as_u64);
            }
            let next = next_link(&bundle);
            if let Some(Value::Array(entries)) = bundle.get_mut("entry") {
                for entry in entries.iter_mut() {
                    let mode = entry
                        .get("search")
                        .and_then(|s| s.get("mode"))
                        .and_then(Value::as_str);
                    if matches!(mode, Some("include" | "outcome")) {
                        continue;
                    }
                    if let Some(resource) = entry.get_mut("resource").map(Value::take) {
                        results.push(resource);
                    }
                }
            }
            let Some(next) = next else {
                if let Some(total) = total
                    && (results.len() as u64) < total
                {
                    return Err(FhirClientError::InvalidResponse {
                        operation,
                        reason: format!(
                            "the search reported {total} matches but returned {} without a next link",
                            results.len()
                        ),
                    });
                }
                return Ok(results);
            };
            let next =
                self.inner
                    .base
                    .join(&next)
                    .map_err(|_| FhirClientError::InvalidResponse {
                        operation,
                        reason: "the next link is not a url".into(),
                    })?;
            if next.origin() != self.inner.base.origin() {
                return Err(FhirClientError::InvalidResponse {
                    operation,
                    reason: "the next link points to another server; it is not followed so the access token is not sent there (check the server's base url setting)".into(),
                });
            }
            if next == url || seen.contains(&next) {
                return Err(FhirClientError::InvalidResponse {
                    operation,
                    reason: "the next links loop".into(),
                });
            }
            seen.push(std::mem::replace(&mut url, next));
        }
        Err(FhirClientError::InvalidResponse {
            operation,
            reason: format!("the search has more than {MAX_PAGES} pages"),
        })
    }
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle
        .get("link")
        .and_then(Value::as_array)?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
        .and_then(|l| l.get("url"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn escapes_special_characters() {
        assert_eq!(escape_search_value(r"a|b,c$d\e"), r"a\|b\,c\$d\\e");
        assert_eq!(identifier_token(Some("urn:x"), "1,2"), r"urn:x|1\,2");
        assert_eq!(identifier_token(None, "abc"), "abc");
        assert_eq!(escape_search_value("plain.value-1"), "plain.value-1");
        let mut form = String::new();
        push_form_search_value(&mut form, "a b|c");
        assert_eq!(form, "a+b%5C%7Cc");
        form.clear();
        push_form_search_value(&mut form, "p1.d1.spo2.20240101");
        assert_eq!(form, "p1.d1.spo2.20240101");
    }

    #[test]
    fn exact_identifier_matching() {
        let r = json!({"identifier": [{"system": "s", "value": "abc"}, {"value": "xyz"}]});
        assert!(has_identifier(&r, Some("s"), "abc"));
        assert!(has_identifier(&r, None, "abc"));
        assert!(has_identifier(&r, None, "xyz"));
        assert!(!has_identifier(&r, Some("s"), "ABC"));
        assert!(!has_identifier(&r, Some("s"), "ab"));
        assert!(!has_identifier(&r, Some("t"), "abc"));
        assert!(!has_identifier(&r, Some("s"), "xyz"));
        assert!(!has_identifier(&json!({}), None, "abc"));
    }
}
