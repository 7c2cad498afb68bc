//! `iomt check` as users run it, against the real FHIR test server (`test-peers/fhir-server`,
//! started through `iomt-testkit`; `IOMT_SKIP_FHIR_SERVER=1` skips those tests, loudly).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use iomt_testkit::{FhirServer, FhirServerOptions};

const SECRET_ENV: &str = "IOMT_TEST_FHIR_CLIENT_SECRET";

fn iomt(args: &[&str], secret: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iomt"));
    command.arg("check").args(args).env_remove(SECRET_ENV);
    if let Some(secret) = secret {
        command.env(SECRET_ENV, secret);
    }
    command.output().expect("iomt runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A YAML configuration for the server's client-credentials client; the secret is read from
/// [`SECRET_ENV`], as a deployment would.
fn write_config(dir: &Path, server: &FhirServer) -> String {
    let path = dir.join("fhir.yaml");
    std::fs::write(
        &path,
        format!(
            "# the FHIR side of the connector\n\
             base_url: {}\n\
             auth:\n  type: client_credentials\n  token_url: {}\n  client_id: {}\n  \
             client_secret: {{ env: {SECRET_ENV} }}\n\
             retry:\n  initial_backoff: 10ms\n  max_backoff: 50ms\n",
            server.base_url(),
            server.token_url(),
            server.client().client_id
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn passes_with_client_credentials() {
    let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let secret = server.client().client_secret.clone();

    let out = iomt(&["--fhir-config", &config], Some(&secret));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with(&format!(
            "checking the fhir server at {} (auth: client_credentials)\n",
            server.base_url()
        )),
        "{text}"
    );
    for line in [
        "[ok  ] token: the token endpoint issued a token (client_credentials)",
        "[ok  ] fhir version: FHIR R4 (4.0.1)",
        "[ok  ] authorized search: Device and Observation searches are allowed",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(
        text.ends_with("all checks passed\n") || text.contains("all checks passed, "),
        "{text}"
    );
    assert!(!text.contains(&secret), "the secret is never printed");

    let out = iomt(&["--fhir-config", &config, "--json"], Some(&secret));
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["server"]["fhirVersion"], "4.0.1");
    let token = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "token")
        .unwrap();
    assert_eq!(token["status"], "pass");
}

#[test]
fn says_the_credentials_were_rejected() {
    let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server);
    let out = iomt(&["--fhir-config", &config], Some("not-the-secret"));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] token: the token endpoint rejected the client's credentials (http 401, invalid_client)"),
        "{text}"
    );
    assert!(
        text.contains("check auth.client_id and the client secret"),
        "{text}"
    );
    assert!(text.contains("[skip] capability statement"), "{text}");
    assert!(
        text.ends_with(
            "1 check(s) failed: do what the FAIL line above says, then run iomt check again\n"
        ),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"));

    // The secret not set at all is a configuration problem: exit 2, nothing sent.
    let out = iomt(&["--fhir-config", &config], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "[FAIL] secrets: cannot read auth.client_secret: environment variable {SECRET_ENV} is not set"
        )),
        "{text}"
    );
}

#[test]
fn says_it_cannot_connect() {
    let url = format!("http://127.0.0.1:{}/fhir", closed_port());
    let out = iomt(&["--fhir-url", &url], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "[FAIL] capability statement: cannot connect to base_url: connection refused, nothing listens at its host and port; check the port and that the server runs"
        ),
        "{text}"
    );

    let out = iomt(&["--fhir-url", &url, "--json"], None);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["server"], serde_json::Value::Null);
    let failed: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["capability statement"]);
}

#[test]
fn says_a_url_is_not_a_fhir_server() {
    // The server's FHIR API is under /fhir; its origin, what a user may paste when the path
    // is forgotten, answers 404.
    let Some(server) =
        FhirServer::start_unless_skipped(FhirServerOptions::default().base_path("/fhir"))
    else {
        return;
    };
    assert!(server.base_url().ends_with("/fhir"));
    let out = iomt(&["--fhir-url", server.origin()], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] capability statement: base_url answers 404: no fhir server at this path; check the path (…/fhir, …/R4, …/baseR4)"),
        "{text}"
    );

    // A web page answering 200 (a hospital portal, an API gateway's root).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let web = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        let page = "<!doctype html><html><head><title>Patient portal</title></head><body>Welcome</body></html>";
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        )
        .unwrap();
    });
    let out = iomt(&["--fhir-url", &format!("http://127.0.0.1:{port}/")], None);
    web.join().unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] capability statement: base_url answers, but not with fhir json: is it the fhir endpoint rather than a web page?"),
        "{text}"
    );
}

#[test]
fn configuration_problems_exit_with_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("fhir.yaml");
    std::fs::write(
        &bad_key,
        "base_url: http://127.0.0.1:1/fhir\nhttp:\n  timeout: 5s\n",
    )
    .unwrap();
    let out = iomt(&["--fhir-config", bad_key.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a valid fhir client configuration"),
        "{err}"
    );
    assert!(err.contains("unknown field `timeout`"), "{err}");

    let bad_value = dir.path().join("fhir.json");
    std::fs::write(&bad_value, r#"{"base_url": "ftp://example.org/fhir"}"#).unwrap();
    let out = iomt(&["--fhir-config", bad_value.to_str().unwrap()], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("[FAIL] configuration: base_url: must be an absolute http(s) url"),
        "{text}"
    );

    let out = iomt(&[], None);
    assert_eq!(out.status.code(), Some(2), "no target is a usage error");
    let out = iomt(&["--fhir-url", "http://x", "--fhir-config", "f.yaml"], None);
    assert_eq!(out.status.code(), Some(2), "both targets is a usage error");
}

/// A service configuration with an MQTT source and the local store; `password` goes inline.
fn write_service_config(dir: &Path, mqtt_port: u16, password: &str) -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iothub");
    let path = dir.join("pipeline.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\n\
             data_dir: {data}\n\
             mappings:\n  device: {device}\n  fhir: {fhir}\n\
             sources:\n  mqtt:\n    host: 127.0.0.1\n    port: {mqtt_port}\n    \
             client_id: iomt-check-test\n    topics: [devices/+/telemetry]\n    \
             username: iomt\n    password: {{ value: {password} }}\n\
             destination:\n  local: {{}}\n\
             admin:\n  disabled: true\n",
            data = dir.join("data").display(),
            device = examples.join("devicecontent.json").display(),
            fhir = examples.join("fhirmapping.json").display(),
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_service_configuration_gets_its_broker_checked() {
    let Some(broker) = iomt_testkit::Mosquitto::start_unless_skipped(
        iomt_testkit::MosquittoOptions::default().user("iomt", "right-password"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    let config = write_service_config(dir.path(), broker.port(), "right-password");
    let out = iomt(&["--config", &config], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("destination: the local store"), "{text}");
    assert!(
        text.contains(&format!(
            "[ok  ] mqtt broker at 127.0.0.1:{}: connected",
            broker.port()
        )),
        "{text}"
    );

    let config = write_service_config(dir.path(), broker.port(), "wrong-password");
    let out = iomt(&["--config", &config, "--json"], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["sources"][0]["source"], "mqtt");
    assert_eq!(report["sources"][0]["status"], "fail");
    let message = report["sources"][0]["message"].as_str().unwrap();
    assert!(message.contains("sources.mqtt.password"), "{message}");
    assert!(
        !text.contains("wrong-password"),
        "the secret was printed: {text}"
    );
}

#[test]
fn an_invalid_service_configuration_contacts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_service_config(dir.path(), closed_port(), "x");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("client_id: iomt-check-test", "client_idd: iomt-check-test");
    std::fs::write(&config, text).unwrap();
    let out = iomt(&["--config", &config], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("nothing was contacted"), "{text}");
    assert!(text.contains("client_idd"), "{text}");
}

#[test]
fn a_kafka_source_gets_its_brokers_and_topics_checked() {
    let Some(broker) = iomt_testkit::Tansu::start_unless_skipped() else {
        return;
    };
    broker.create_topic("devicedata", 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iothub");
    let write = |topic: &str| {
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(
            &path,
            format!(
                "version: 1\n\
                 data_dir: {data}\n\
                 mappings:\n  device: {device}\n  fhir: {fhir}\n\
                 sources:\n  kafka:\n    bootstrap_servers: {bootstrap}\n    \
                 topics: [{topic}]\n    group_id: iomt\n\
                 destination:\n  local: {{}}\n\
                 admin:\n  disabled: true\n",
                data = dir.path().join("data").display(),
                device = examples.join("devicecontent.json").display(),
                fhir = examples.join("fhirmapping.json").display(),
                bootstrap = broker.bootstrap_servers(),
            ),
        )
        .unwrap();
        path.display().to_string()
    };

    let config = write("devicedata");
    let out = iomt(&["--config", &config], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "[ok  ] kafka broker at {}: connected; topic devicedata (3 partitions)",
            broker.bootstrap_servers()
        )),
        "{text}"
    );

    let config = write("devicedata-typo");
    let out = iomt(&["--config", &config], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("have no topic devicedata-typo: create it"),
        "{text}"
    );
}
