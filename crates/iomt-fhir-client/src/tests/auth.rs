//! Token acquisition, caching, refresh and rejection; SMART assertions; static tokens.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::device;
use crate::config::{AuthConfig, ClientAuthMethod, FhirClientConfig, JwtAlgorithm};
use crate::error::FhirClientError;
use crate::fake::FakeFhir;
use crate::http::FhirClient;
use crate::secret::{Secret, SecretSource};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn client_credentials(fake: &FakeFhir, secret: &str, method: ClientAuthMethod) -> FhirClientConfig {
    let mut config = fake.config();
    config.auth = AuthConfig::ClientCredentials {
        token_url: fake.token_url(),
        client_id: "iomt".into(),
        client_secret: SecretSource::Value(Secret::new(secret)),
        scope: Some("system/*.write".into()),
        resource: None,
        client_auth: method,
        refresh_before_expiry: Duration::from_secs(60),
    };
    config
}

fn require_tokens(fake: &FakeFhir) {
    fake.state().accepted_tokens = Some(HashSet::new());
    fake.insert(device("d1", None, "dev-1", Some("Patient/p1")));
}

#[tokio::test]
async fn one_token_serves_many_requests() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    let client = FhirClient::new(&client_credentials(
        &fake,
        "right-secret",
        ClientAuthMethod::ClientSecretPost,
    ))
    .unwrap();
    let searches = (0..8).map(|_| client.search("Device", &[("identifier", "dev-1")]));
    for result in futures_join(searches).await {
        assert_eq!(result.unwrap().len(), 1);
    }
    assert_eq!(fake.state().tokens_issued, 1);
    assert_eq!(client.counters().tokens_issued, 1);
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    // Sequential is enough to show the cache; concurrency is shown by the persist tests.
    for f in futures {
        out.push(f.await);
    }
    out
}

#[tokio::test]
async fn a_401_refreshes_the_token_once() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    let client = FhirClient::new(&client_credentials(
        &fake,
        "right-secret",
        ClientAuthMethod::ClientSecretBasic,
    ))
    .unwrap();
    client
        .search("Device", &[("identifier", "dev-1")])
        .await
        .unwrap();
    // The server forgets every token (revoked, or a restart with new keys).
    fake.state().accepted_tokens = Some(HashSet::new());
    let found = client
        .search("Device", &[("identifier", "dev-1")])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(fake.state().tokens_issued, 2);
    let log = fake.log();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("POST /token")).count(),
        2,
        "{log:?}"
    );
}

#[tokio::test]
async fn a_second_401_is_an_error() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    fake.fail_next(
        "GET",
        "^/fhir/Device$",
        10,
        wiremock::ResponseTemplate::new(401),
    )
    .await;
    let client = FhirClient::new(&client_credentials(
        &fake,
        "right-secret",
        ClientAuthMethod::ClientSecretPost,
    ))
    .unwrap();
    let err = client.search("Device", &[]).await.unwrap_err();
    assert!(
        matches!(err, FhirClientError::Unauthorized { .. }),
        "{err:?}"
    );
    assert!(err.is_systemic());
    assert_eq!(fake.state().tokens_issued, 2);
}

#[tokio::test]
async fn a_wrong_secret_is_reported_in_plain_words() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    let client = FhirClient::new(&client_credentials(
        &fake,
        "wrong",
        ClientAuthMethod::ClientSecretPost,
    ))
    .unwrap();
    let err = client.search("Device", &[]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the token endpoint refused a token with http 401 (invalid_client: client authentication failed): check auth.client_id, the secret or key, and auth.scope / auth.resource"
    );
    assert!(err.is_systemic());
    assert!(
        !format!("{err:?}{client:?}").contains("wrong"),
        "the secret leaked"
    );
    // Not retried: a 401 from the token endpoint will not change.
    assert_eq!(fake.state().log.len(), 1);
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_before_they_expire() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    fake.state().token_ttl = 2; // refresh margin: min(60s, 1s)
    let client = FhirClient::new(&client_credentials(
        &fake,
        "right-secret",
        ClientAuthMethod::ClientSecretPost,
    ))
    .unwrap();
    client.search("Device", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.search("Device", &[]).await.unwrap();
    assert_eq!(fake.state().tokens_issued, 2);
    // No request was ever refused: the refresh came first.
    assert!(fake.log().iter().all(|l| !l.contains("401")));
    assert_eq!(client.counters().retries, 0);
}

fn smart(fake: &FakeFhir, key: &str, algorithm: JwtAlgorithm) -> FhirClientConfig {
    let mut config = fake.config();
    config.auth = AuthConfig::SmartBackend {
        token_url: fake.token_url(),
        client_id: "iomt".into(),
        private_key: SecretSource::File(testdata(key)),
        algorithm,
        key_id: "test-key".into(),
        scope: "system/Observation.write system/Device.read".into(),
        jku: None,
        refresh_before_expiry: Duration::from_secs(60),
    };
    config
}

#[tokio::test]
async fn smart_backend_services_rs384_and_es384() {
    for (private, public, algorithm, alg) in [
        (
            "rsa-private.pem",
            "rsa-public.pem",
            JwtAlgorithm::RS384,
            jsonwebtoken::Algorithm::RS384,
        ),
        (
            "ec384-private.pem",
            "ec384-public.pem",
            JwtAlgorithm::ES384,
            jsonwebtoken::Algorithm::ES384,
        ),
    ] {
        let fake = FakeFhir::start().await;
        require_tokens(&fake);
        let pem = std::fs::read(testdata(public)).unwrap();
        let key = match algorithm {
            JwtAlgorithm::RS384 => jsonwebtoken::DecodingKey::from_rsa_pem(&pem).unwrap(),
            JwtAlgorithm::ES384 => jsonwebtoken::DecodingKey::from_ec_pem(&pem).unwrap(),
        };
        fake.state().assertion_key = Some((key, alg));
        let client = FhirClient::new(&smart(&fake, private, algorithm)).unwrap();
        let found = client
            .search("Device", &[("identifier", "dev-1")])
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{algorithm:?}");
        assert_eq!(fake.state().tokens_issued, 1);
    }
}

#[tokio::test]
async fn smart_with_a_key_the_server_does_not_know_is_refused() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    let pem = std::fs::read(testdata("ec384-public.pem")).unwrap();
    fake.state().assertion_key = Some((
        jsonwebtoken::DecodingKey::from_ec_pem(&pem).unwrap(),
        jsonwebtoken::Algorithm::ES384,
    ));
    // Signed with the RSA key: the server cannot verify it.
    let client = FhirClient::new(&smart(&fake, "rsa-private.pem", JwtAlgorithm::RS384)).unwrap();
    let err = client.search("Device", &[]).await.unwrap_err();
    assert!(
        matches!(err, FhirClientError::TokenRejected { status: 401, .. }),
        "{err:?}"
    );
}

#[test]
fn smart_keys_of_the_wrong_kind_fail_at_startup() {
    let config = |key: &str, algorithm| {
        let mut c = FhirClientConfig::new("http://127.0.0.1:1/fhir");
        c.auth = AuthConfig::SmartBackend {
            token_url: "http://127.0.0.1:1/token".into(),
            client_id: "iomt".into(),
            private_key: SecretSource::File(testdata(key)),
            algorithm,
            key_id: "k".into(),
            scope: "system/*.write".into(),
            jku: None,
            refresh_before_expiry: Duration::from_secs(60),
        };
        c
    };
    for (key, algorithm) in [
        ("ec256-private.pem", JwtAlgorithm::ES384),
        ("ec384-private.pem", JwtAlgorithm::RS384),
        ("README.md", JwtAlgorithm::RS384),
    ] {
        let err = FhirClient::new(&config(key, algorithm)).unwrap_err();
        assert!(
            matches!(err, FhirClientError::PrivateKey { .. }),
            "{key}: {err:?}"
        );
        assert!(
            err.to_string().starts_with("auth.private_key cannot sign"),
            "{err}"
        );
    }
    let err = FhirClient::new(&config("missing.pem", JwtAlgorithm::RS384)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read auth.private_key: cannot read secret file"),
        "{err}"
    );
}

#[tokio::test]
async fn a_static_token_file_is_read_again_after_a_401() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    fake.state().accepted_tokens = Some(HashSet::from(["second".to_owned()]));
    let dir = std::env::temp_dir().join(format!("iomt-static-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "first\n").unwrap();
    let mut config = fake.config();
    config.auth = AuthConfig::Bearer {
        token: SecretSource::File(file.clone()),
    };
    let client = FhirClient::new(&config).unwrap();
    // Rotated by a sidecar after startup.
    std::fs::write(&file, "second\n").unwrap();
    assert_eq!(
        client
            .search("Device", &[("identifier", "dev-1")])
            .await
            .unwrap()
            .len(),
        1
    );
    // An inline (or environment) token cannot change: a 401 is final.
    let mut config = fake.config();
    config.auth = AuthConfig::Bearer {
        token: SecretSource::Value(Secret::new("first")),
    };
    let err = FhirClient::new(&config)
        .unwrap()
        .search("Device", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, FhirClientError::Unauthorized { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn tokens_and_secrets_stay_out_of_debug_output() {
    let fake = FakeFhir::start().await;
    require_tokens(&fake);
    let config = client_credentials(&fake, "right-secret", ClientAuthMethod::ClientSecretPost);
    let client = FhirClient::new(&config).unwrap();
    client.search("Device", &[]).await.unwrap();
    let text = format!("{config:?} {client:?}");
    assert!(!text.contains("right-secret"), "{text}");
    assert!(!text.contains("token-1"), "{text}");
}
