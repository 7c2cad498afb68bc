//! `iomt simulate` as users run it: NDJSON that the other commands read, and the send mode's
//! exit status.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn iomt(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env_remove("IOMT_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iomt runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn simulate(extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        "--output",
        "-",
        "--seed",
        "3",
        "--start",
        "2026-11-26T08:00:00Z",
        "--devices",
        "5",
        "--rate",
        "10",
    ];
    args.extend_from_slice(extra);
    let out = iomt(&args, b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn output_is_reproducible_and_maps_to_observations() {
    let first = simulate(&["--count", "200"]);
    let second = simulate(&["--count", "200"]);
    assert_eq!(
        first.stdout, second.stdout,
        "same seed and start, same file"
    );
    assert_eq!(first.stdout.iter().filter(|&&b| b == b'\n').count(), 200);
    assert_eq!(
        String::from_utf8_lossy(&first.stderr).trim(),
        "wrote 200 wearable messages (0 bad on purpose) to stdout"
    );

    let report = iomt(
        &[
            "test-mapping",
            "--device-mapping",
            "examples/wearable/devicecontent.json",
            "--fhir-mapping",
            "examples/wearable/fhirmapping.json",
            "-",
        ],
        &first.stdout,
    );
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report.status.code(), Some(0), "{}", json["summary"]);
    assert_eq!(json["summary"]["messages"], 200);
    assert_eq!(json["summary"]["failedMessages"], 0);
    assert!(json["summary"]["observations"].as_u64().unwrap() > 20);
}

#[test]
fn iot_hub_output_is_envelopes_for_normalize() {
    let out = simulate(&["--shape", "iot-hub", "--duration", "10s"]);
    let normalized = iomt(
        &[
            "normalize",
            "--envelope",
            "--device-mapping",
            "examples/iothub/devicecontent.json",
            "-",
        ],
        &out.stdout,
    );
    assert_eq!(
        normalized.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&normalized.stderr)
    );
    let measurements: Vec<serde_json::Value> = String::from_utf8_lossy(&normalized.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(measurements.len(), 100, "10 s at 10 messages/s");
    assert_eq!(measurements[0]["DeviceId"], "sim-0001");
    assert_eq!(measurements[0]["OccurrenceTimeUtc"], "2026-11-26T08:00:00Z");
    assert!(measurements[0]["IngestionTimeUtc"].is_string());
}

#[test]
fn bad_messages_are_dead_letter_material() {
    let out = simulate(&["--shape", "iot-central", "--count", "30", "--bad-rate", "1"]);
    let normalized = iomt(
        &[
            "normalize",
            "--device-mapping",
            "examples/iotcentral/devicecontent.json",
            "-",
        ],
        &out.stdout,
    );
    assert_eq!(normalized.status.code(), Some(1));
    assert!(normalized.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&normalized.stderr).lines().count(),
        30
    );
}

#[test]
fn output_needs_an_end_and_a_destination_is_required() {
    let out = iomt(&["simulate", "--output", "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --count or --duration with --output"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = iomt(&["simulate", "--count", "1"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap wants --target or --output"
    );
    let out = iomt(
        &[
            "simulate",
            "--output",
            "-",
            "--count",
            "1",
            "--bad-rate",
            "2",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad message rate 2 is not a fraction"));
}

#[test]
fn sending_to_nothing_says_so_and_fails() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let target = format!("http://{address}");
    let out = iomt(
        &[
            "simulate", "--target", &target, "--count", "50", "--rate", "100",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the target did not answer"), "{stdout}");
    assert!(stdout.contains("accepted  0"), "{stdout}");
}

mod targets {
    //! `iomt simulate --target mqtt://…` and `kafka://…` against real brokers: mosquitto (from
    //! Debian, `iomt_testkit::Mosquitto`) and tansu (a Kafka-protocol broker,
    //! `iomt_testkit::Tansu`); the messages are read back with ordinary clients and checked.

    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    use iomt_testkit::{Mosquitto, MosquittoOptions, Tansu};
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    use super::iomt;

    fn stdout(out: &std::process::Output) -> String {
        format!(
            "{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_publishes_each_device_to_its_own_topic_at_qos_1() {
        let Some(broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default()) else {
            return;
        };
        let mut options = MqttOptions::new("simulate-test-subscriber", "127.0.0.1", broker.port());
        options.set_clean_start(true);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        client
            .subscribe("devices/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        // Wait for the SUBACK before anything is published.
        let mut subacks = 0;
        while subacks < 1 {
            if let Event::Incoming(Packet::SubAck(_)) =
                tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
                    .await
                    .expect("the broker answers")
                    .expect("the subscriber connects")
            {
                subacks += 1;
            }
        }

        let target = format!("mqtt://127.0.0.1:{}/devices", broker.port());
        let out = tokio::task::spawn_blocking(move || {
            iomt(
                &[
                    "simulate",
                    "--target",
                    &target,
                    "--shape",
                    "iot-hub",
                    "--devices",
                    "3",
                    "--count",
                    "30",
                    "--rate",
                    "200",
                ],
                b"",
            )
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("sent      30 messages"), "{}", stdout(&out));
        assert!(
            text.contains("accepted  30\n"),
            "acknowledged: {}",
            stdout(&out)
        );

        let mut by_topic: BTreeMap<String, usize> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while by_topic.values().sum::<usize>() < 30 {
            assert!(Instant::now() < deadline, "only got {by_topic:?}");
            let event = tokio::time::timeout(Duration::from_secs(5), eventloop.poll())
                .await
                .expect("messages arrive")
                .expect("the subscriber stays connected");
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                let device = topic.strip_prefix("devices/").expect("under the prefix");
                let body: serde_json::Value = serde_json::from_slice(&publish.payload)
                    .expect("the body is the IoT Hub message body");
                assert!(body.is_object(), "{body}");
                let properties = publish.properties.expect("user properties");
                assert!(
                    properties
                        .user_properties
                        .iter()
                        .any(|(name, value)| name == "iothub-creation-time-utc"
                            && chrono::DateTime::parse_from_rfc3339(value).is_ok()),
                    "{:?}",
                    properties.user_properties
                );
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                *by_topic.entry(device.to_owned()).or_default() += 1;
            }
        }
        assert_eq!(
            by_topic.keys().cloned().collect::<Vec<_>>(),
            ["sim-0001", "sim-0002", "sim-0003"],
            "one topic per device"
        );
        assert_eq!(by_topic.values().sum::<usize>(), 30);
    }

    #[test]
    fn mqtt_with_a_wrong_password_is_refused_and_fails() {
        let Some(broker) =
            Mosquitto::start_unless_skipped(MosquittoOptions::default().user("device", "right"))
        else {
            return;
        };
        let target = format!("mqtt://127.0.0.1:{}/devices", broker.port());
        let run = |password: &str| {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iomt"))
                .args([
                    "simulate", "--target", &target, "--count", "5", "--rate", "100",
                ])
                .args([
                    "--mqtt-username",
                    "device",
                    "--mqtt-password-env",
                    "TEST_MQTT_PASSWORD",
                ])
                .env("TEST_MQTT_PASSWORD", password)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child.stdin.take();
            child.wait_with_output().unwrap()
        };
        let out = run("wrong");
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("the target refused the credentials (mqtt reason 13"),
            "{}",
            stdout(&out)
        );
        assert!(text.contains("accepted  0\n"), "{}", stdout(&out));
        let out = run("right");
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accepted  5\n"),
            "{}",
            stdout(&out)
        );
    }

    /// A CA and a server certificate for 127.0.0.1, as PEM: (CA, certificate, key).
    fn tls_material() -> (String, String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = server.signed_by(&key, &ca).unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    #[test]
    fn mqtts_verifies_the_broker_with_the_given_ca() {
        let (ca_pem, cert_pem, key_pem) = tls_material();
        let Some(broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default().tls(
            iomt_testkit::MosquittoTls {
                ca_pem: ca_pem.clone(),
                cert_pem,
                key_pem,
                require_client_cert: false,
            },
        )) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let target = format!("mqtts://127.0.0.1:{}/devices", broker.port());
        let ca = ca_file.display().to_string();
        let out = iomt(
            &[
                "simulate",
                "--target",
                &target,
                "--count",
                "10",
                "--rate",
                "100",
                "--mqtt-ca-file",
                &ca,
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accepted  10\n"),
            "{}",
            stdout(&out)
        );

        // Another CA: the broker's certificate does not verify, nothing is accepted.
        let (other_ca, _, _) = tls_material();
        std::fs::write(&ca_file, other_ca).unwrap();
        let out = iomt(
            &[
                "simulate",
                "--target",
                &target,
                "--count",
                "10",
                "--rate",
                "100",
                "--mqtt-ca-file",
                &ca,
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accepted  0\n"),
            "{}",
            stdout(&out)
        );
    }

    #[test]
    fn mqtt_without_a_broker_says_so_and_fails() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = format!("mqtt://127.0.0.1:{port}/devices");
        let out = iomt(&["simulate", "--target", &target, "--count", "5"], b"");
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("the target did not answer"),
            "{}",
            stdout(&out)
        );
    }

    #[test]
    fn kafka_produces_keyed_by_device_with_iot_hub_properties_as_headers() {
        let Some(broker) = Tansu::start_unless_skipped() else {
            return;
        };
        broker.create_topic("device-messages", 3).unwrap();
        let target = format!("kafka://{}/device-messages", broker.bootstrap_servers());
        let out = iomt(
            &[
                "simulate",
                "--target",
                &target,
                "--shape",
                "iot-hub",
                "--devices",
                "4",
                "--count",
                "40",
                "--rate",
                "200",
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accepted  40\n"),
            "acknowledged: {}",
            stdout(&out)
        );

        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "simulate-test")
            .set("session.timeout.ms", "6000")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&["device-messages"]).unwrap();
        let mut keys = BTreeSet::new();
        let mut seen = 0;
        let mut partitions = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen < 40 {
            assert!(Instant::now() < deadline, "only {seen} of 40 consumed");
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message.expect("consumes");
            let key = String::from_utf8(message.key().expect("keyed").to_vec()).unwrap();
            let headers: BTreeMap<String, String> = message
                .headers()
                .expect("headers")
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                headers.get("iothub-connection-device-id"),
                Some(&key),
                "the key is the device id: {headers:?}"
            );
            let enqueued = headers
                .get("iothub-enqueuedtime")
                .expect("the enqueued time travels as a header");
            let enqueued = chrono::DateTime::parse_from_rfc3339(enqueued).unwrap();
            assert_eq!(
                message.timestamp().to_millis(),
                Some(enqueued.timestamp_millis()),
                "the record time is the enqueued time"
            );
            assert!(
                headers.contains_key("iothub-creation-time-utc"),
                "{headers:?}"
            );
            serde_json::from_slice::<serde_json::Value>(message.payload().unwrap())
                .expect("the value is the message body");
            keys.insert(key);
            partitions.insert(message.partition());
            seen += 1;
        }
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert!(
            partitions.len() > 1,
            "keys spread over partitions: {partitions:?}"
        );
    }
}
