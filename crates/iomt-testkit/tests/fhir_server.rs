//! The FHIR test server, exercised through the harness: OAuth2 (secrets, bearer, static token,
//! private_key_jwt), create/read/update with ETags, identifier search semantics and paging,
//! validation, batches, every fault type, and the admin API.
//!
//! Starting a server loads the R4 definitions (about a second of CPU), so tests share two: a
//! read-mostly one that every test may use concurrently (each test writes its own ids and
//! identifiers), and one behind a mutex for tests that change global state (faults, settings,
//! tokens, counters), reset before each use. Both are statics and never dropped; the servers
//! exit when this process does (`--exit-with-stdin`).
//!
//! Set `IOMT_SKIP_FHIR_SERVER=1` to skip these tests; without it a missing `npm ci` fails them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iomt_testkit::ureq::http::{HeaderMap, Request};
use iomt_testkit::{
    Faults, FhirServer, FhirServerError, FhirServerOptions, IdentifierMatch, ScriptedFault,
};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use p384::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};

const STATIC_TOKEN: &str = "static-test-token";
const JWT_CLIENT: &str = "backend-service";
const OBSERVATION_SYSTEM: &str = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/";

// ---------------------------------------------------------------------------------------------
// Shared servers and request helpers

fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(new_signing_key)
}

/// A fresh P-384 key from 48 random bytes (the std hasher's per-process random keys).
fn new_signing_key() -> SigningKey {
    loop {
        let bytes: Vec<u8> = (0..6).flat_map(|_| random_u64().to_le_bytes()).collect();
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return key;
        }
    }
}

fn public_key_pem(key: &SigningKey) -> String {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encode the public key")
}

fn shared() -> Option<&'static FhirServer> {
    static SERVER: OnceLock<Option<FhirServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            FhirServer::start_unless_skipped(
                FhirServerOptions::default()
                    .client("second-client", "s3cret with spaces:and:colons")
                    .static_token(STATIC_TOKEN)
                    .jwt_client(JWT_CLIENT, public_key_pem(signing_key()))
                    .page_size(3),
            )
        })
        .as_ref()
}

/// The server for tests that change global state; reset (no data, no faults, zero counters).
fn exclusive() -> Option<MutexGuard<'static, FhirServer>> {
    static SERVER: OnceLock<Option<Mutex<FhirServer>>> = OnceLock::new();
    let server = SERVER
        .get_or_init(|| {
            FhirServer::start_unless_skipped(FhirServerOptions::default()).map(Mutex::new)
        })
        .as_ref()?;
    let guard = server
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.reset().expect("reset the server");
    guard
        .set_token_ttl(Duration::from_secs(3600))
        .expect("restore the token lifetime");
    guard.set_page_size(20).expect("restore the page size");
    Some(guard)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A string unique within this test run, for ids and identifier values.
fn unique() -> String {
    format!("{:016x}", random_u64())
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request; `target` is a path below the FHIR base or an absolute URL.
fn try_send(
    server: &FhirServer,
    method: &str,
    target: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Reply, iomt_testkit::ureq::Error> {
    let url = if target.starts_with("http") {
        target.to_owned()
    } else {
        server.url(target)
    };
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let agent = server.agent();
    let mut response = match body {
        Some(body) => agent.run(
            builder
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .expect("request"),
        )?,
        None => agent.run(builder.body(()).expect("request"))?,
    };
    Ok(Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.body_mut().read_to_string()?,
    })
}

fn send(
    server: &FhirServer,
    method: &str,
    target: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    try_send(server, method, target, token, headers, body)
        .unwrap_or_else(|err| panic!("{method} {target}: {err}"))
}

fn token_request(server: &FhirServer, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Reply {
    let mut request = server.agent().post(server.token_url());
    if let Some((id, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    let mut response = request
        .send_form(form.iter().copied())
        .expect("token request");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response
            .body_mut()
            .read_to_string()
            .expect("token response"),
    }
}

fn device(id: &str, identifiers: Value) -> Value {
    json!({ "resourceType": "Device", "id": id, "identifier": identifiers })
}

fn observation(id: &str, identifier_value: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "identifier": [{ "system": OBSERVATION_SYSTEM, "value": identifier_value }],
        "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4", "display": "Heart rate" }] },
        "subject": { "reference": "Patient/p" },
        "device": { "reference": "Device/d" },
        "effectivePeriod": { "start": "2024-01-01T00:00:00.000Z", "end": "2024-01-01T00:00:30.000Z" },
        "issued": "2024-01-01T00:01:00.000Z",
        "valueSampledData": {
            "origin": { "value": 0, "unit": "count/min" },
            "period": 1000,
            "dimensions": 1,
            "data": "61 62 63 E 64"
        }
    })
}

fn put(server: &FhirServer, token: &str, resource: &Value) -> Reply {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    send(server, "PUT", &path, Some(token), &[], Some(resource))
}

fn search_ids(server: &FhirServer, token: &str, query: &str) -> Vec<String> {
    let reply = send(server, "GET", query, Some(token), &[], None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let bundle = reply.json();
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn client_assertion(key: &SigningKey, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "ES384", "typ": "JWT" }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn jwt_token_request(server: &FhirServer, assertion: &str) -> Reply {
    token_request(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs system/Observation.cu"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ],
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// OAuth2

#[test]
fn tokens_are_issued_for_the_right_secret_and_refused_for_a_wrong_one() {
    let Some(server) = shared() else { return };
    let client = server.client();
    let ok = token_request(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
            ("scope", "https://fhir.example/.default"),
        ],
        None,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let body = ok.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "https://fhir.example/.default");
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        send(
            server,
            "GET",
            "Patient?identifier=nobody",
            Some(token),
            &[],
            None
        )
        .status,
        200
    );

    // HTTP Basic, with an id and secret that need form-encoding inside the header.
    let basic = token_request(
        server,
        &[("grant_type", "client_credentials")],
        Some(("second-client", "s3cret+with+spaces%3Aand%3Acolons")),
    );
    assert_eq!(basic.status, 200, "{}", basic.body);

    let wrong = token_request(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client.client_id),
            ("client_secret", "not-the-secret"),
        ],
        None,
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "invalid_client");

    let wrong_basic = token_request(
        server,
        &[("grant_type", "client_credentials")],
        Some(("second-client", "nope")),
    );
    assert_eq!(wrong_basic.status, 401);
    assert_eq!(wrong_basic.json()["error"], "invalid_client");
    assert!(
        wrong_basic
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );

    let unknown = token_request(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
        ],
        None,
    );
    assert_eq!(unknown.status, 401);

    let grant = token_request(server, &[("grant_type", "password")], None);
    assert_eq!(grant.status, 400);
    assert_eq!(grant.json()["error"], "unsupported_grant_type");

    assert_eq!(server.fetch_token().map(|t| t.len()).unwrap_or(0), 32);
}

#[test]
fn fhir_requests_need_a_valid_bearer_token() {
    let Some(server) = shared() else { return };
    let none = send(server, "GET", "Patient/anyone", None, &[], None);
    assert_eq!(none.status, 401);
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(none.json()["resourceType"], "OperationOutcome");

    let bad = send(server, "GET", "Patient/anyone", Some("made-up"), &[], None);
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    let basic = send(
        server,
        "GET",
        "Patient/anyone",
        None,
        &[("authorization", "Basic eDp5")],
        None,
    );
    assert_eq!(basic.status, 401);

    // Writes are refused before anything is stored.
    let id = unique();
    let refused = send(
        server,
        "PUT",
        &format!("Device/{id}"),
        None,
        &[],
        Some(&device(&id, json!([]))),
    );
    assert_eq!(refused.status, 401);
    let token = server.fetch_token().unwrap();
    assert_eq!(
        send(
            server,
            "GET",
            &format!("Device/{id}"),
            Some(&token),
            &[],
            None
        )
        .status,
        404
    );

    // The capability statement and SMART discovery are public.
    assert_eq!(send(server, "GET", "metadata", None, &[], None).status, 200);
    let smart = send(
        server,
        "GET",
        ".well-known/smart-configuration",
        None,
        &[],
        None,
    );
    assert_eq!(smart.json()["token_endpoint"], server.token_url());
}

#[test]
fn the_static_token_is_accepted() {
    let Some(server) = shared() else { return };
    assert_eq!(server.static_token(), Some(STATIC_TOKEN));
    let id = unique();
    let created = put(server, STATIC_TOKEN, &device(&id, json!([{ "value": id }])));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        send(
            server,
            "GET",
            &format!("Device/{id}"),
            Some(STATIC_TOKEN),
            &[],
            None
        )
        .status,
        200
    );
}

#[test]
fn expired_and_revoked_tokens_are_refused() {
    let Some(server) = exclusive() else { return };
    server.set_token_ttl(Duration::from_secs(1)).unwrap();
    let short = server.fetch_token().unwrap();
    assert_eq!(
        send(
            &server,
            "GET",
            "Patient?identifier=x",
            Some(&short),
            &[],
            None
        )
        .status,
        200
    );
    thread::sleep(Duration::from_millis(2100));
    let expired = send(
        &server,
        "GET",
        "Patient?identifier=x",
        Some(&short),
        &[],
        None,
    );
    assert_eq!(expired.status, 401);
    assert!(
        expired
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    assert!(expired.body.contains("expired"), "{}", expired.body);

    server.set_token_ttl(Duration::from_secs(3600)).unwrap();
    let long = server.fetch_token().unwrap();
    assert_eq!(
        send(
            &server,
            "GET",
            "Patient?identifier=x",
            Some(&long),
            &[],
            None
        )
        .status,
        200
    );
    server.revoke_tokens().unwrap();
    assert_eq!(
        send(
            &server,
            "GET",
            "Patient?identifier=x",
            Some(&long),
            &[],
            None
        )
        .status,
        401
    );
    let fresh = server.fetch_token().unwrap();
    assert_eq!(
        send(
            &server,
            "GET",
            "Patient?identifier=x",
            Some(&fresh),
            &[],
            None
        )
        .status,
        200
    );
}

#[test]
fn private_key_jwt_client_assertions_are_verified() {
    let Some(server) = shared() else { return };
    let claims = |overrides: Value| {
        let mut claims = json!({
            "iss": JWT_CLIENT,
            "sub": JWT_CLIENT,
            "aud": server.token_url(),
            "exp": now_secs() + 240,
            "jti": unique(),
        });
        for (k, v) in overrides.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };

    let good = client_assertion(signing_key(), &claims(json!({})));
    let ok = jwt_token_request(server, &good);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let token = ok.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        send(
            server,
            "GET",
            "Device?identifier=x",
            Some(&token),
            &[],
            None
        )
        .status,
        200
    );

    let refused = |assertion: String, why: &str| {
        let reply = jwt_token_request(server, &assertion);
        assert_eq!(reply.status, 401, "{why}: {}", reply.body);
        assert_eq!(reply.json()["error"], "invalid_client", "{why}");
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(refused(good, "replayed jti").contains("already used"));
    assert!(
        refused(
            client_assertion(&new_signing_key(), &claims(json!({}))),
            "other key"
        )
        .contains("signature")
    );
    assert!(
        refused(
            client_assertion(
                signing_key(),
                &claims(json!({ "aud": "http://elsewhere/token" }))
            ),
            "aud"
        )
        .contains("aud")
    );
    assert!(
        refused(
            client_assertion(signing_key(), &claims(json!({ "exp": now_secs() - 60 }))),
            "expired"
        )
        .contains("expired")
    );
    assert!(
        refused(
            client_assertion(signing_key(), &claims(json!({ "sub": "someone-else" }))),
            "sub"
        )
        .contains("iss and sub")
    );
    let mut tampered = client_assertion(signing_key(), &claims(json!({})));
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert!(refused(tampered, "tampered signature").contains("signature"));
}

// ---------------------------------------------------------------------------------------------
// REST

#[test]
fn capability_statement_is_r4_and_names_the_token_endpoint() {
    let Some(server) = shared() else { return };
    let reply = send(server, "GET", "metadata?_summary=true", None, &[], None);
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/fhir+json")
    );
    let statement = reply.json();
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    let oauth = &statement["rest"][0]["security"]["extension"][0];
    assert_eq!(oauth["extension"][0]["valueUri"], server.token_url());
    let types: Vec<&str> = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    for t in ["Observation", "Device", "Patient", "Encounter"] {
        assert!(types.contains(&t), "{t} missing");
    }
}

#[test]
fn put_creates_with_the_client_id_then_updates_and_reads_back() {
    let Some(server) = shared() else { return };
    let token = server.fetch_token().unwrap();
    let id = unique();
    let resource = observation(&id, &format!("p.d.hr.{id}"));

    let created = put(server, &token, &resource);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert_eq!(
        created.header("location").unwrap(),
        server.url(&format!("Observation/{id}/_history/1"))
    );
    let body = created.json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["meta"]["versionId"], "1");

    let mut amended = resource.clone();
    amended["status"] = json!("amended");
    let updated = put(server, &token, &amended);
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.header("etag"), Some("W/\"2\""));

    let read = send(
        server,
        "GET",
        &format!("Observation/{id}"),
        Some(&token),
        &[],
        None,
    );
    assert_eq!(read.status, 200);
    assert_eq!(read.header("etag"), Some("W/\"2\""));
    let read = read.json();
    assert_eq!(read["status"], "amended");
    assert_eq!(read["valueSampledData"]["data"], "61 62 63 E 64");

    let history = send(
        server,
        "GET",
        &format!("Observation/{id}/_history"),
        Some(&token),
        &[],
        None,
    )
    .json();
    assert_eq!(history["entry"].as_array().unwrap().len(), 2);
    let minimal = send(
        server,
        "PUT",
        &format!("Observation/{id}"),
        Some(&token),
        &[("prefer", "return=minimal")],
        Some(&resource),
    );
    assert_eq!((minimal.status, minimal.body.as_str()), (200, ""));
    assert_eq!(minimal.header("etag"), Some("W/\"3\""));

    let mismatch = send(
        server,
        "PUT",
        &format!("Observation/{}", unique()),
        Some(&token),
        &[],
        Some(&resource),
    );
    assert_eq!(mismatch.status, 400, "body id must match the URL");
    assert_eq!(
        send(
            server,
            "GET",
            &format!("Observation/{}", unique()),
            Some(&token),
            &[],
            None
        )
        .status,
        404
    );
}

#[test]
fn a_stale_if_match_is_412_and_a_current_one_succeeds() {
    let Some(server) = shared() else { return };
    let token = server.fetch_token().unwrap();
    let id = unique();
    let mut resource = device(&id, json!([{ "system": "urn:test", "value": id }]));
    assert_eq!(put(server, &token, &resource).status, 201);
    resource["manufacturer"] = json!("first");
    assert_eq!(put(server, &token, &resource).status, 200);

    resource["manufacturer"] = json!("stale");
    let path = format!("Device/{id}");
    let stale = send(
        server,
        "PUT",
        &path,
        Some(&token),
        &[("if-match", "W/\"1\"")],
        Some(&resource),
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(stale.json()["resourceType"], "OperationOutcome");

    resource["manufacturer"] = json!("current");
    let current = send(
        server,
        "PUT",
        &path,
        Some(&token),
        &[("if-match", "W/\"2\"")],
        Some(&resource),
    );
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.header("etag"), Some("W/\"3\""));
    let read = send(server, "GET", &path, Some(&token), &[], None).json();
    assert_eq!(read["manufacturer"], "current");
}

#[test]
fn identifier_search_has_exact_fhir_semantics() {
    let Some(server) = shared() else { return };
    let token = server.fetch_token().unwrap();
    let value = format!("dev-{}", unique());
    let upper = value.to_uppercase();
    let resources = [
        ("a", json!([{ "system": "urn:sys:a", "value": value }])),
        ("b", json!([{ "system": "urn:sys:b", "value": value }])),
        ("c", json!([{ "value": value }])),
        ("d", json!([{ "system": "urn:sys:a", "value": upper }])),
        (
            "e",
            json!([{ "system": "urn:sys:a", "value": format!("{value}-longer") }]),
        ),
    ];
    let ids: Vec<String> = resources
        .iter()
        .map(|(suffix, identifiers)| {
            let id = format!("{value}-{suffix}");
            assert_eq!(
                put(server, &token, &device(&id, identifiers.clone())).status,
                201
            );
            id
        })
        .collect();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let find = |query: &str| {
        sorted(search_ids(
            server,
            &token,
            &format!("Device?identifier={}&_count=10", encode(query)),
        ))
    };

    assert_eq!(
        find(&value),
        sorted(vec![ids[0].clone(), ids[1].clone(), ids[2].clone()]),
        "value: any system"
    );
    assert_eq!(
        find(&format!("urn:sys:a|{value}")),
        vec![ids[0].clone()],
        "system|value"
    );
    assert_eq!(
        find(&format!("|{value}")),
        vec![ids[2].clone()],
        "|value: no system"
    );
    assert_eq!(
        find(&format!("urn:sys:a|{upper}")),
        vec![ids[3].clone()],
        "case-sensitive"
    );
    assert_eq!(
        find(&format!("urn:sys:b|{value},urn:sys:a|{upper}")),
        sorted(vec![ids[1].clone(), ids[3].clone()])
    );
    assert_eq!(find(&format!("urn:sys:c|{value}")), Vec::<String>::new());
    assert_eq!(
        find(&value[..value.len() - 1]),
        Vec::<String>::new(),
        "no prefix match"
    );

    // The resource types the connector resolves, with the connector's identifier shapes.
    let patient_id = unique();
    let patient = json!({ "resourceType": "Patient", "id": patient_id, "identifier": [{ "value": format!("patient-{patient_id}") }] });
    assert_eq!(put(server, &token, &patient).status, 201);
    assert_eq!(
        search_ids(
            server,
            &token,
            &format!("Patient?identifier=patient-{patient_id}")
        ),
        vec![patient_id.clone()]
    );
    let encounter_id = unique();
    let encounter = json!({
        "resourceType": "Encounter", "id": encounter_id, "status": "in-progress",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "identifier": [{ "system": "urn:enc", "value": format!("enc-{encounter_id}") }]
    });
    assert_eq!(put(server, &token, &encounter).status, 201);
    assert_eq!(
        search_ids(
            server,
            &token,
            &format!("Encounter?identifier=enc-{encounter_id}")
        ),
        vec![encounter_id.clone()]
    );
    let observation_id = unique();
    let obs_value = format!("{patient_id}.{}.heartrate.{observation_id}", ids[0]);
    assert_eq!(
        put(server, &token, &observation(&observation_id, &obs_value)).status,
        201
    );
    let query = format!(
        "Observation?identifier={}",
        encode(&format!("{OBSERVATION_SYSTEM}|{obs_value}"))
    );
    assert_eq!(search_ids(server, &token, &query), vec![observation_id]);

    // Updates move a resource between identifiers.
    assert_eq!(
        put(
            server,
            &token,
            &device(
                &ids[0],
                json!([{ "system": "urn:sys:a", "value": "moved" }])
            )
        )
        .status,
        200
    );
    assert_eq!(find(&format!("urn:sys:a|{value}")), Vec::<String>::new());
}

#[test]
fn searches_page_with_next_links() {
    let Some(server) = shared() else { return };
    let token = server.fetch_token().unwrap();
    let value = format!("paged-{}", unique());
    let created: Vec<String> = (0..7)
        .map(|i| {
            let id = format!("{value}-{i}");
            let identifiers = json!([{ "system": format!("urn:sys:{i}"), "value": value }]);
            assert_eq!(put(server, &token, &device(&id, identifiers)).status, 201);
            id
        })
        .collect();

    // Explicit _count: follow next links until there are none.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut next = Some(format!("Device?identifier={value}&_count=2"));
    while let Some(target) = next.take() {
        let reply = send(server, "GET", &target, Some(&token), &[], None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let bundle = reply.json();
        assert_eq!(bundle["total"], 7);
        for entry in bundle["entry"].as_array().unwrap() {
            assert_eq!(entry["search"]["mode"], "match");
            assert!(
                entry["fullUrl"]
                    .as_str()
                    .unwrap()
                    .starts_with(server.base_url())
            );
            seen.push(entry["resource"]["id"].as_str().unwrap().to_owned());
        }
        next = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        pages += 1;
        assert!(pages <= 4, "too many pages");
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, created, "every match exactly once, in creation order");

    // No _count: the server's page size (3 on this server) applies, and next links carry it.
    let first = send(
        server,
        "GET",
        &format!("Device?identifier={value}"),
        Some(&token),
        &[],
        None,
    )
    .json();
    assert_eq!(first["entry"].as_array().unwrap().len(), 3);
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap();
    assert!(next["url"].as_str().unwrap().contains("_count=3"));
    assert!(next["url"].as_str().unwrap().contains("_offset=3"));

    // _summary=count: the total only.
    let count = send(
        server,
        "GET",
        &format!("Device?identifier={value}&_summary=count"),
        Some(&token),
        &[],
        None,
    )
    .json();
    assert_eq!(count["total"], 7);
    assert!(count.get("entry").is_none());
}

#[test]
fn invalid_resources_are_400_with_an_operation_outcome() {
    let Some(server) = shared() else { return };
    let token = server.fetch_token().unwrap();
    let id = unique();
    let check = |resource: Value, expect: &str| {
        let reply = put(server, &token, &resource);
        assert_eq!(reply.status, 400, "{expect}: {}", reply.body);
        let outcome = reply.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["severity"], "error");
        assert!(reply.body.contains(expect), "{expect}: {}", reply.body);
    };
    let mut missing_code = observation(&id, "x");
    missing_code.as_object_mut().unwrap().remove("code");
    check(missing_code, "Observation.code");
    let mut unknown_element = observation(&id, "x");
    unknown_element["heartRate"] = json!(60);
    check(unknown_element, "heartRate");
    let mut bad_instant = observation(&id, "x");
    bad_instant["issued"] = json!("yesterday");
    check(bad_instant, "Observation.issued");
    let mut bad_number = observation(&id, "x");
    bad_number["valueSampledData"]["period"] = json!("fast");
    check(bad_number, "period");
    assert_eq!(
        send(
            server,
            "GET",
            &format!("Observation/{id}"),
            Some(&token),
            &[],
            None
        )
        .status,
        404,
        "nothing stored"
    );

    let not_json = server
        .agent()
        .put(server.url(&format!("Observation/{id}")))
        .header("authorization", format!("Bearer {token}"))
        .content_type("application/fhir+json")
        .send("{ not json")
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);

    let unknown_type = send(server, "GET", "Heartbeat/1", Some(&token), &[], None);
    assert_eq!(unknown_type.status, 404);
}

#[test]
fn batch_bundles_report_each_entry() {
    let Some(server) = shared() else { return };
    let token = server.fetch_token().unwrap();
    let device_id = unique();
    let obs_id = unique();
    let mut invalid = observation(&unique(), "x");
    invalid.as_object_mut().unwrap().remove("status");
    let invalid_id = invalid["id"].as_str().unwrap().to_owned();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            { "request": { "method": "PUT", "url": format!("Device/{device_id}") },
              "resource": device(&device_id, json!([{ "system": "urn:batch", "value": device_id }])) },
            { "request": { "method": "PUT", "url": format!("Observation/{obs_id}") },
              "resource": observation(&obs_id, &obs_id) },
            { "request": { "method": "PUT", "url": format!("Observation/{invalid_id}") }, "resource": invalid },
            { "request": { "method": "GET", "url": format!("Device?identifier=urn:batch|{device_id}") } }
        ]
    });
    let reply = send(server, "POST", "", Some(&token), &[], Some(&bundle));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let response = reply.json();
    assert_eq!(response["type"], "batch-response");
    let statuses: Vec<&str> = response["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201", "201", "400", "200"]);
    assert_eq!(response["entry"][0]["response"]["etag"], "W/\"1\"");
    assert_eq!(
        response["entry"][1]["response"]["location"],
        format!("Observation/{obs_id}/_history/1")
    );
    assert_eq!(
        response["entry"][3]["resource"]["total"], 1,
        "searches inside a batch see earlier writes"
    );
    assert_eq!(
        send(
            server,
            "GET",
            &format!("Observation/{invalid_id}"),
            Some(&token),
            &[],
            None
        )
        .status,
        404
    );
}

// ---------------------------------------------------------------------------------------------
// Faults

#[test]
fn fault_429_carries_retry_after() {
    let Some(server) = exclusive() else { return };
    let token = server.fetch_token().unwrap();
    server
        .set_faults(&Faults {
            rate_429: 1.0,
            retry_after: Some(2),
            ..Faults::default()
        })
        .unwrap();
    let reply = send(
        &server,
        "GET",
        "Patient?identifier=x",
        Some(&token),
        &[],
        None,
    );
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.json()["issue"][0]["code"], "throttled");
    // Token requests are spared unless asked for.
    assert!(server.fetch_token().is_ok());
    server.clear_faults().unwrap();
    assert_eq!(
        send(
            &server,
            "GET",
            "Patient?identifier=x",
            Some(&token),
            &[],
            None
        )
        .status,
        200
    );
    assert_eq!(server.stats().unwrap().faults.get("429"), Some(&1));
}

#[test]
fn fault_503_and_scripted_statuses() {
    let Some(server) = exclusive() else { return };
    let token = server.fetch_token().unwrap();
    server
        .set_faults(&Faults {
            rate_503: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let reply = send(
        &server,
        "GET",
        "Patient?identifier=x",
        Some(&token),
        &[],
        None,
    );
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), None);

    server
        .set_faults(&Faults {
            script: vec![
                ScriptedFault::Status(500),
                ScriptedFault::Pass,
                ScriptedFault::Status(422),
            ],
            ..Faults::default()
        })
        .unwrap();
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            send(
                &server,
                "GET",
                "Patient?identifier=x",
                Some(&token),
                &[],
                None,
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [500, 200, 422, 200]);
}

#[test]
fn fault_drop_closes_the_connection_without_handling_the_request() {
    let Some(server) = exclusive() else { return };
    let token = server.fetch_token().unwrap();
    server
        .set_faults(&Faults {
            script: vec![ScriptedFault::Drop],
            ..Faults::default()
        })
        .unwrap();
    let id = unique();
    let result = try_send(
        &server,
        "PUT",
        &format!("Device/{id}"),
        Some(&token),
        &[],
        Some(&device(&id, json!([]))),
    );
    assert!(
        result.is_err(),
        "expected a transport error, got {:?}",
        result.map(|r| r.status)
    );
    assert_eq!(
        send(
            &server,
            "GET",
            &format!("Device/{id}"),
            Some(&token),
            &[],
            None
        )
        .status,
        404,
        "not written"
    );
    let stats = server.stats().unwrap();
    assert_eq!(stats.count("PUT", "Device", "drop"), 1);
}

#[test]
fn fault_drop_after_writes_but_never_answers() {
    let Some(server) = exclusive() else { return };
    let token = server.fetch_token().unwrap();
    server
        .set_faults(&Faults {
            drop_after_rate: 1.0,
            methods: Some(vec!["PUT".into()]),
            ..Faults::default()
        })
        .unwrap();
    let id = unique();
    let result = try_send(
        &server,
        "PUT",
        &format!("Device/{id}"),
        Some(&token),
        &[],
        Some(&device(&id, json!([]))),
    );
    assert!(
        result.is_err(),
        "expected a transport error, got {:?}",
        result.map(|r| r.status)
    );
    let read = send(
        &server,
        "GET",
        &format!("Device/{id}"),
        Some(&token),
        &[],
        None,
    );
    assert_eq!(read.status, 200, "the write happened");
    assert_eq!(server.stats().unwrap().faults.get("dropAfter"), Some(&1));
}

#[test]
fn fault_412_hits_only_conditional_updates() {
    let Some(server) = exclusive() else { return };
    let token = server.fetch_token().unwrap();
    let id = unique();
    let resource = device(&id, json!([]));
    assert_eq!(put(&server, &token, &resource).status, 201);
    server
        .set_faults(&Faults {
            rate_412: 1.0,
            ..Faults::default()
        })
        .unwrap();
    assert_eq!(
        put(&server, &token, &resource).status,
        200,
        "no If-Match: passes"
    );
    let path = format!("Device/{id}");
    let conditional = send(
        &server,
        "PUT",
        &path,
        Some(&token),
        &[("if-match", "W/\"2\"")],
        Some(&resource),
    );
    assert_eq!(conditional.status, 412);
    assert_eq!(conditional.json()["issue"][0]["code"], "conflict");
    server.clear_faults().unwrap();
    let again = send(
        &server,
        "PUT",
        &path,
        Some(&token),
        &[("if-match", "W/\"2\"")],
        Some(&resource),
    );
    assert_eq!(again.status, 200, "the injected 412 changed nothing");
}

#[test]
fn seeded_faults_repeat_and_filters_select_requests() {
    let Some(server) = exclusive() else { return };
    let token = server.fetch_token().unwrap();
    let faults = Faults {
        rate_429: 0.3,
        rate_503: 0.2,
        seed: Some(42),
        resource_types: Some(vec!["Observation".into()]),
        ..Faults::default()
    };
    let run = || -> Vec<u16> {
        server.set_faults(&faults).unwrap();
        (0..30)
            .map(|_| {
                assert_eq!(
                    send(
                        &server,
                        "GET",
                        "Device?identifier=x",
                        Some(&token),
                        &[],
                        None
                    )
                    .status,
                    200
                );
                send(
                    &server,
                    "GET",
                    "Observation?identifier=x",
                    Some(&token),
                    &[],
                    None,
                )
                .status
            })
            .collect()
    };
    let first = run();
    assert_eq!(first, run(), "same seed, same faults");
    assert!(
        first.contains(&429) && first.contains(&503) && first.contains(&200),
        "{first:?}"
    );

    server
        .set_faults(&Faults {
            script: vec![ScriptedFault::Status(503)],
            include_token: true,
            ..Faults::default()
        })
        .unwrap();
    assert!(matches!(
        server.fetch_token(),
        Err(FhirServerError::Status { status: 503, .. })
    ));
    assert!(server.fetch_token().is_ok());
}

#[test]
fn bad_fault_settings_are_refused_with_the_reason() {
    let Some(server) = exclusive() else { return };
    let err = server
        .set_faults(&Faults {
            rate_429: 0.7,
            rate_503: 0.7,
            ..Faults::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("must not exceed 1"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Admin API and other server modes

#[test]
fn the_admin_api_needs_the_admin_token() {
    let Some(server) = shared() else { return };
    let token = server.fetch_token().unwrap();
    let stats_url = format!("{}/__admin/stats", server.origin());
    let anonymous = send(server, "GET", &stats_url, None, &[], None);
    assert_eq!(anonymous.status, 401);
    let fhir_token = send(server, "GET", &stats_url, Some(&token), &[], None);
    assert_eq!(fhir_token.status, 401, "a FHIR token is not an admin token");
    let reset = send(
        server,
        "POST",
        &format!("{}/__admin/reset", server.origin()),
        Some(STATIC_TOKEN),
        &[],
        None,
    );
    assert_eq!(reset.status, 401);
    let admin = send(
        server,
        "GET",
        &stats_url,
        Some(server.admin_token()),
        &[],
        None,
    );
    assert_eq!(admin.status, 200);
    // And the admin token is not a FHIR token.
    assert_eq!(
        send(
            server,
            "GET",
            "Patient?identifier=x",
            Some(server.admin_token()),
            &[],
            None
        )
        .status,
        401
    );
}

#[test]
fn stats_count_requests_and_reset_clears_everything() {
    let Some(server) = exclusive() else { return };
    let token = server.fetch_token().unwrap();
    for i in 0..3 {
        let id = format!("stats-{i}");
        assert_eq!(put(&server, &token, &observation(&id, &id)).status, 201);
    }
    assert_eq!(
        put(&server, &token, &observation("stats-0", "stats-0")).status,
        200
    );
    let _ = send(
        &server,
        "GET",
        "Observation?identifier=stats-1",
        Some(&token),
        &[],
        None,
    );
    let _ = send(&server, "GET", "Observation/none", None, &[], None);
    let stats = server.stats().unwrap();
    assert_eq!(stats.count("PUT", "Observation", 201), 3);
    assert_eq!(stats.count("PUT", "Observation", 200), 1);
    assert_eq!(stats.count("GET", "Observation", 200), 1);
    assert_eq!(stats.count("GET", "Observation", 401), 1);
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.by_method.get("PUT"), Some(&4));
    assert_eq!(stats.by_status.get("401"), Some(&1));
    assert_eq!(stats.by_resource_type.get("Observation"), Some(&6));
    assert_eq!(stats.resources, 3);
    assert_eq!(stats.tokens.issued, 1);

    server.reset().unwrap();
    let stats = server.stats().unwrap();
    assert_eq!((stats.requests, stats.resources), (0, 0));
    assert_eq!(
        send(
            &server,
            "GET",
            "Observation/stats-0",
            Some(&token),
            &[],
            None
        )
        .status,
        404
    );
    assert_eq!(
        send(
            &server,
            "GET",
            "Observation/stats-0",
            Some(&token),
            &[],
            None
        )
        .status,
        404,
        "tokens survive a reset"
    );
}

#[test]
fn no_auth_server_under_a_base_path() {
    let Some(server) = FhirServer::start_unless_skipped(
        FhirServerOptions::default()
            .no_auth()
            .base_path("/fhir/R4")
            .identifier_match(IdentifierMatch::CaseInsensitive)
            .log_requests(true),
    ) else {
        return;
    };
    assert!(
        server.base_url().ends_with("/fhir/R4"),
        "{}",
        server.base_url()
    );
    let id = unique();
    let created = send(
        &server,
        "PUT",
        &format!("Device/{id}"),
        None,
        &[],
        Some(&device(
            &id,
            json!([{ "system": "urn:s", "value": "MiXeD" }]),
        )),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("location").unwrap(),
        format!("{}/Device/{id}/_history/1", server.base_url())
    );
    assert_eq!(
        search_ids(&server, "ignored", "Device?identifier=urn:s|mixed"),
        vec![id.clone()],
        "case-insensitive mode"
    );
    let outside = send(
        &server,
        "GET",
        &format!("{}/Device/{id}", server.origin()),
        None,
        &[],
        None,
    );
    assert_eq!(outside.status, 404, "only the base path serves FHIR");
    let statement = send(&server, "GET", "metadata", None, &[], None).json();
    assert!(
        statement["rest"][0].get("security").is_none(),
        "no security section without auth"
    );
    // The request log names paths and parameter names, never parameter values. (The log is
    // read by a harness thread: give it a moment.)
    let expected = "GET /fhir/R4/Device?identifier 200";
    let mut logs = String::new();
    for _ in 0..100 {
        logs = server.logs().join("\n");
        if logs.contains(expected) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(logs.contains(expected), "{logs}");
    assert!(!logs.to_lowercase().contains("mixed"), "{logs}");
}

#[test]
fn startup_failures_quote_the_server_output() {
    if FhirServer::skip_requested() {
        return;
    }
    let err = FhirServer::start(FhirServerOptions::default().identifier_max_length(0)).unwrap_err();
    assert!(matches!(err, FhirServerError::ExitedEarly { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("--identifier-max-length must be between 1"),
        "{err}"
    );
}
