//! An in-process fake FHIR server for the unit tests: a stateful wiremock responder with
//! read, search (identifier tokens, paging), PUT with versions and `If-Match`, `batch` Bundles,
//! a client-credentials token endpoint that also verifies SMART assertions, and switches to
//! misbehave (prefix-only identifier matching, pages without `next` links). Faults (429, 503,
//! 412, …) are mounted in front of it as ordinary wiremock mocks with `up_to_n_times`.
//!
//! It is not the real test server (`iomt-testkit`): it exists so the retry, auth and conflict
//! paths are tested deterministically and fast; `tests/server.rs` runs the same flows against
//! Medplum.

use std::collections::{BTreeMap, HashSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::config::FhirClientConfig;

pub(crate) struct State {
    pub resources: BTreeMap<(String, String), (Value, u64)>,
    pub next_version: u64,
    pub page_size: usize,
    /// Compare only this many characters of identifier values (as some servers do).
    pub prefix_match: Option<usize>,
    /// Leave `next` links out of paged searches (but keep `total`).
    pub omit_next: bool,
    /// Put `next` links on another origin.
    pub foreign_next: bool,
    /// Answer a `POST …/_search` whose (form-encoded) body contains the text this late.
    pub slow_searches: Vec<(String, Duration)>,
    /// Tokens accepted on FHIR requests; `None` = no auth required.
    pub accepted_tokens: Option<HashSet<String>>,
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl: u64,
    pub tokens_issued: u64,
    /// The public key (PEM) and algorithm SMART assertions must verify with.
    pub assertion_key: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Algorithm)>,
    pub log: Vec<String>,
    pub token_url: String,
}

#[derive(Clone)]
pub(crate) struct FakeFhir {
    pub server: Arc<MockServer>,
    pub state: Arc<Mutex<State>>,
}

struct Handler {
    state: Arc<Mutex<State>>,
    base: String,
}

fn outcome(status: u16, text: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]
    }))
}

fn unescape_split(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push('\u{1}');
                    out.last_mut().unwrap().push(n);
                }
            }
            ',' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// Splits `system|value` (escapes marked with \u{1}) and removes the escape marks.
fn split_token(token: &str) -> (Option<String>, String) {
    let clean = |s: &str| s.replace('\u{1}', "");
    let mut prev_escape = false;
    for (i, c) in token.char_indices() {
        if c == '|' && !prev_escape {
            return (Some(clean(&token[..i])), clean(&token[i + 1..]));
        }
        prev_escape = c == '\u{1}';
    }
    (None, clean(token))
}

impl State {
    fn matches(&self, resource: &Value, system: Option<&str>, value: &str) -> bool {
        let cut = |s: &str| -> String {
            match self.prefix_match {
                Some(n) => s.chars().take(n).collect(),
                None => s.to_owned(),
            }
        };
        resource
            .get("identifier")
            .and_then(Value::as_array)
            .is_some_and(|ids| {
                ids.iter().any(|id| {
                    id.get("value").and_then(Value::as_str).map(cut) == Some(cut(value))
                        && system
                            .is_none_or(|s| id.get("system").and_then(Value::as_str) == Some(s))
                })
            })
    }

    fn put(
        &mut self,
        rtype: &str,
        id: &str,
        mut body: Value,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        let key = (rtype.to_owned(), id.to_owned());
        let existing = self.resources.get(&key).map(|(_, v)| *v);
        if let Some(tag) = if_match {
            let wanted = tag.trim_start_matches("W/").trim_matches('"');
            match existing {
                Some(v) if v.to_string() == wanted => {}
                _ => {
                    return (
                        412,
                        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "conflict", "diagnostics": "version mismatch"}]}),
                    );
                }
            }
        }
        if rtype == "Observation" && body.get("code").is_none() {
            return (
                422,
                json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "required", "diagnostics": "Missing required property", "expression": ["Observation.code"]}]}),
            );
        }
        self.next_version += 1;
        let version = self.next_version;
        body["id"] = json!(id);
        body["meta"] = json!({"versionId": version.to_string()});
        self.resources.insert(key, (body.clone(), version));
        (if existing.is_some() { 200 } else { 201 }, body)
    }

    fn authorized(&self, request: &Request) -> bool {
        let Some(accepted) = &self.accepted_tokens else {
            return true;
        };
        request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| accepted.contains(t))
    }

    fn token(&mut self, request: &Request) -> ResponseTemplate {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let basic = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .map(str::to_owned);
        let ok = if let Some(assertion) = get("client_assertion") {
            let Some((key, alg)) = &self.assertion_key else {
                return ResponseTemplate::new(400)
                    .set_body_json(json!({"error": "invalid_client"}));
            };
            let mut validation = jsonwebtoken::Validation::new(*alg);
            validation.set_audience(std::slice::from_ref(&self.token_url));
            validation.set_issuer(std::slice::from_ref(&self.client_id));
            validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
            let header_ok = jsonwebtoken::decode_header(&assertion)
                .is_ok_and(|h| h.kid.as_deref() == Some("test-key"));
            get("client_assertion_type").as_deref()
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && header_ok
                && jsonwebtoken::decode::<Value>(&assertion, key, &validation).is_ok_and(|d| {
                    d.claims["sub"] == json!(self.client_id) && d.claims["jti"].is_string()
                })
        } else if let Some(basic) = basic {
            use base64_check::decode;
            decode(&basic) == format!("{}:{}", self.client_id, self.client_secret)
        } else {
            get("client_id").as_deref() == Some(&self.client_id)
                && get("client_secret").as_deref() == Some(&self.client_secret)
        };
        if !ok || get("grant_type").as_deref() != Some("client_credentials") {
            return ResponseTemplate::new(401).set_body_json(json!({
                "error": "invalid_client", "error_description": "client authentication failed"
            }));
        }
        self.tokens_issued += 1;
        let token = format!("token-{}", self.tokens_issued);
        if let Some(accepted) = &mut self.accepted_tokens {
            accepted.insert(token.clone());
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl
        }))
    }
}

/// Minimal base64 decoding for Basic credentials (test only).
mod base64_check {
    pub fn decode(text: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in text.bytes().filter(|c| *c != b'=') {
            let Some(v) = ALPHABET.iter().position(|a| *a == c) else {
                continue;
            };
            bits = (bits << 6) | v as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        let decoded = String::from_utf8_lossy(&out).into_owned();
        decoded
            .split_once(':')
            .map(|(a, b)| {
                let dec = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                format!("{}:{}", dec(a), dec(b))
            })
            .unwrap_or(decoded)
    }
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        let path = request.url.path().to_owned();
        let query = request
            .url
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        state.log.push(format!("{} {path}{query}", request.method));
        if path == "/token" {
            return state.token(request);
        }
        let Some(rest) = path.strip_prefix("/fhir") else {
            return ResponseTemplate::new(404);
        };
        if rest == "/metadata" {
            return ResponseTemplate::new(200).set_body_json(json!({
                "resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                "software": {"name": "fake", "version": "1"},
                "rest": [{"mode": "server", "interaction": [{"code": "batch"}], "resource": [
                    {"type": "Observation", "interaction": [{"code": "update"}, {"code": "search-type"}]},
                    {"type": "Device", "interaction": [{"code": "search-type"}]}
                ]}]
            }));
        }
        if !state.authorized(request) {
            return outcome(401, "invalid token");
        }
        let segments: Vec<&str> = rest
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let method = request.method.as_str();
        match (method, segments.as_slice()) {
            ("GET", [rtype]) => self.search(&state, rtype, &request.url),
            ("POST", [rtype, "_search"]) => {
                let body = String::from_utf8_lossy(&request.body);
                let delay = state
                    .slow_searches
                    .iter()
                    .find(|(needle, _)| body.contains(needle.as_str()))
                    .map(|(_, delay)| *delay);
                let mut url = request.url.clone();
                url.set_path(&format!("/fhir/{rtype}"));
                url.set_query(Some(&body));
                let response = self.search(&state, rtype, &url);
                match delay {
                    Some(delay) => response.set_delay(delay),
                    None => response,
                }
            }
            ("GET", [rtype, id]) => match state.resources.get(&(rtype.to_string(), id.to_string()))
            {
                Some((v, version)) => ResponseTemplate::new(200)
                    .insert_header("etag", format!("W/\"{version}\"").as_str())
                    .set_body_json(v),
                None => outcome(404, "not found"),
            },
            ("PUT", [rtype, id]) => {
                let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                    return outcome(400, "not json");
                };
                let if_match = request
                    .headers
                    .get("if-match")
                    .and_then(|v| v.to_str().ok());
                let (status, body) = state.put(rtype, id, body, if_match);
                let mut response = ResponseTemplate::new(status).set_body_json(&body);
                if let Some(v) = body
                    .get("meta")
                    .and_then(|m| m.get("versionId"))
                    .and_then(Value::as_str)
                {
                    response = response.insert_header("etag", format!("W/\"{v}\"").as_str());
                }
                response
            }
            ("POST", []) => {
                let Ok(bundle) = serde_json::from_slice::<Value>(&request.body) else {
                    return outcome(400, "not json");
                };
                let mut entries = Vec::new();
                for entry in bundle["entry"].as_array().cloned().unwrap_or_default() {
                    let url = entry["request"]["url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let (rtype, id) = url.split_once('/').unwrap_or_default();
                    let (status, body) = state.put(
                        rtype,
                        id,
                        entry["resource"].clone(),
                        entry["request"]["ifMatch"].as_str(),
                    );
                    let mut response = json!({"status": format!("{status} X")});
                    if status < 300 {
                        response["etag"] = json!(format!(
                            "W/\"{}\"",
                            body["meta"]["versionId"].as_str().unwrap()
                        ));
                        entries.push(json!({"resource": body, "response": response}));
                    } else {
                        response["outcome"] = body;
                        entries.push(json!({"response": response}));
                    }
                }
                ResponseTemplate::new(200).set_body_json(json!({
                    "resourceType": "Bundle", "type": "batch-response", "entry": entries
                }))
            }
            _ => outcome(400, "unsupported"),
        }
    }
}

impl Handler {
    fn search(&self, state: &State, rtype: &str, url: &url::Url) -> ResponseTemplate {
        let mut tokens: Vec<(Option<String>, String)> = Vec::new();
        let mut page = 0usize;
        let mut count = state.page_size;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "identifier" => tokens.extend(unescape_split(&v).iter().map(|t| split_token(t))),
                "_page" => page = v.parse().unwrap_or(0),
                "_count" => count = v.parse::<usize>().unwrap_or(count).min(state.page_size),
                _ => {}
            }
        }
        let matches: Vec<&Value> = state
            .resources
            .iter()
            .filter(|((t, _), _)| t == rtype)
            .map(|(_, (v, _))| v)
            .filter(|r| {
                tokens.is_empty()
                    || tokens
                        .iter()
                        .any(|(s, v)| state.matches(r, s.as_deref(), v))
            })
            .collect();
        let total = matches.len();
        let entries: Vec<Value> = matches
            .iter()
            .skip(page * count)
            .take(count)
            .map(|r| json!({"resource": r, "search": {"mode": "match"}}))
            .collect();
        let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries});
        if (page + 1) * count < total && !state.omit_next {
            let mut next = url.clone();
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "_page")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            next.query_pairs_mut()
                .clear()
                .extend_pairs(pairs)
                .append_pair("_page", &(page + 1).to_string());
            let mut text = format!(
                "{}{}?{}",
                self.base.trim_end_matches("/fhir"),
                next.path(),
                next.query().unwrap_or_default()
            );
            if state.foreign_next {
                text = text.replace("127.0.0.1", "evil.example");
            }
            bundle["link"] = json!([{"relation": "next", "url": text}]);
        }
        ResponseTemplate::new(200).set_body_json(bundle)
    }
}

impl FakeFhir {
    pub async fn start() -> FakeFhir {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State {
            resources: BTreeMap::new(),
            next_version: 0,
            page_size: 100,
            prefix_match: None,
            omit_next: false,
            foreign_next: false,
            slow_searches: Vec::new(),
            accepted_tokens: None,
            client_id: "iomt".into(),
            client_secret: "right-secret".into(),
            token_ttl: 3600,
            tokens_issued: 0,
            assertion_key: None,
            log: Vec::new(),
            token_url: format!("{}/token", server.uri()),
        }));
        let handler = Handler {
            state: state.clone(),
            base: format!("{}/fhir", server.uri()),
        };
        Mock::given(any())
            .respond_with(handler)
            .with_priority(10)
            .mount(&server)
            .await;
        FakeFhir {
            server: Arc::new(server),
            state,
        }
    }

    pub fn base(&self) -> String {
        format!("{}/fhir", self.server.uri())
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.server.uri())
    }

    /// A configuration for this server with fast retries.
    pub fn config(&self) -> FhirClientConfig {
        let mut config = FhirClientConfig::new(self.base());
        config.retry.initial_backoff = Duration::from_millis(1);
        config.retry.max_backoff = Duration::from_millis(5);
        config.retry.max_attempts = NonZeroU32::new(3).unwrap();
        config.http.request_timeout = Duration::from_secs(5);
        config.http.max_concurrency = NonZeroUsize::new(4).unwrap();
        config
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Stores a resource as if created earlier; returns its version.
    pub fn insert(&self, resource: Value) -> u64 {
        let rtype = resource["resourceType"].as_str().unwrap().to_owned();
        let id = resource["id"].as_str().unwrap().to_owned();
        let mut state = self.state();
        let (_, body) = state.put(&rtype, &id, resource, None);
        body["meta"]["versionId"].as_str().unwrap().parse().unwrap()
    }

    pub fn get(&self, rtype: &str, id: &str) -> Option<Value> {
        self.state()
            .resources
            .get(&(rtype.to_owned(), id.to_owned()))
            .map(|(v, _)| v.clone())
    }

    pub fn count(&self, rtype: &str) -> usize {
        self.state()
            .resources
            .keys()
            .filter(|(t, _)| t == rtype)
            .count()
    }

    /// Requests seen by the stateful handler (not those answered by fault mocks).
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    /// Every request the server received, including those answered by fault mocks.
    pub async fn received(&self) -> usize {
        self.server.received_requests().await.map_or(0, |r| r.len())
    }

    /// The decoded `identifier` search values the server received (query or form body), in
    /// order: what the client asked for, whatever answered.
    pub async fn identifier_searches(&self) -> Vec<String> {
        let requests = self.server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .flat_map(|r| {
                let form = url::form_urlencoded::parse(&r.body).into_owned();
                r.url
                    .query_pairs()
                    .into_owned()
                    .chain(form)
                    .filter(|(k, _)| k == "identifier")
                    .map(|(_, v)| v)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Answers the next `times` requests with `method` (`*`: any) whose path matches
    /// `path_regex` with `response`.
    pub async fn fail_next(
        &self,
        method: &str,
        path_regex: &str,
        times: u64,
        response: ResponseTemplate,
    ) {
        let builder = if method == "*" {
            Mock::given(any())
        } else {
            Mock::given(wiremock::matchers::method(method))
        };
        builder
            .and(wiremock::matchers::path_regex(path_regex))
            .respond_with(response)
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }
}
