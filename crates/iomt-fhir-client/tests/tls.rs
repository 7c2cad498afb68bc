//! Custom CA certificates and mutual TLS (`http.tls`) against a real TLS server.
//!
//! Each test makes a throwaway PKI with rcgen (a root CA, a server certificate for 127.0.0.1
//! and a client certificate, all signed by the root), starts a small HTTPS server on loopback
//! (tokio-rustls + hyper) that answers `GET /fhir/metadata` with a minimal R4
//! CapabilityStatement and searches with an empty Bundle, and runs `run_checks` against it.
//! A hospital-internal PKI looks just like this to the client: a root no system trusts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use iomt_fhir_client::check::Check;
use iomt_fhir_client::{FhirClientConfig, FhirClientError, SecretSource, Status, run_checks};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

const CAPABILITY_STATEMENT: &str = r#"{"resourceType": "CapabilityStatement", "status": "active",
  "date": "2025-01-01", "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
  "software": {"name": "tls test server"},
  "rest": [{"mode": "server", "resource": [
    {"type": "Observation", "interaction": [{"code": "update"}, {"code": "search-type"}]},
    {"type": "Device", "interaction": [{"code": "search-type"}]}]}]}"#;

const EMPTY_SEARCH: &str = r#"{"resourceType": "Bundle", "type": "searchset", "total": 0}"#;

/// A root CA and what it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "iomt test hospital root CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "fhir.hospital.internal");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, "iomt");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("root-ca.pem", &ca.pem());
        write("client.pem", &client_cert.pem());
        write("client-key.pem", &client_key.serialize_pem());
        std::fs::write(dir.path().join("root-ca.der"), ca.der()).unwrap();
        Pki {
            ca_der: ca.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A server configuration with the server certificate; with `require_client_cert`, client
    /// certificates signed by the root are required.
    fn server_config(&self, require_client_cert: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(
            builder
                .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
                .unwrap(),
        )
    }
}

/// Serves HTTPS on 127.0.0.1 until the runtime ends; returns the address.
async fn serve(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake is what some tests expect. Close as real servers do (a
                // lingering close): stop writing, then read what the client already sent.
                // Dropping the socket with the client's request unread would make the kernel
                // reset the connection, and the reset can overtake the TLS alert that says why
                // (TLS 1.3 clients send their request before the server has checked their
                // certificate), so the client would see only "connection closed".
                let tls = match acceptor.accept(tcp).into_fallible().await {
                    Ok(tls) => tls,
                    Err((_, mut tcp)) => {
                        let _ = tcp.shutdown().await;
                        let mut unread = [0u8; 4096];
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                            while matches!(tcp.read(&mut unread).await, Ok(n) if n > 0) {}
                        })
                        .await;
                        return;
                    }
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service_fn(answer))
                    .await;
            });
        }
    });
    addr
}

async fn answer(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let (status, body) = match path {
        "/fhir/metadata" => (200, CAPABILITY_STATEMENT),
        "/fhir/Device" | "/fhir/Observation" => (200, EMPTY_SEARCH),
        _ => (404, r#"{"resourceType": "OperationOutcome", "issue": []}"#),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/fhir+json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn config(addr: SocketAddr) -> FhirClientConfig {
    let mut config = FhirClientConfig::new(format!("https://{addr}/fhir"));
    // A handshake failure is not retried into the seconds.
    config.retry.max_attempts = std::num::NonZeroU32::new(1).unwrap();
    config
}

#[test]
fn check_passes_with_the_internal_ca_and_fails_in_plain_words_without_it() {
    let pki = Pki::new();
    runtime().block_on(async {
        let addr = serve(pki.server_config(false)).await;

        let mut trusted = config(addr);
        trusted.http.tls.ca_files = vec![pki.path("root-ca.pem")];
        let report = run_checks(&trusted).await;
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            report.finding(Check::AuthorizedSearch).unwrap().status,
            Status::Pass,
            "{report}"
        );
        let transport = report.finding(Check::TransportSecurity).unwrap();
        assert!(
            transport
                .message
                .contains("trusting the CA certificates of 1 file (http.tls.ca_files) besides the system's"),
            "{report}"
        );

        // Only the internal root, as a pinned deployment would configure it.
        let mut pinned = trusted.clone();
        pinned.http.tls.system_roots = false;
        let report = run_checks(&pinned).await;
        assert!(report.is_ok(), "{report}");

        let report = run_checks(&config(addr)).await;
        assert!(!report.is_ok(), "{report}");
        let finding = report.finding(Check::CapabilityStatement).unwrap();
        assert_eq!(finding.status, Status::Fail);
        assert!(
            finding.message.starts_with(
                "cannot connect to base_url: the tls handshake failed: the server's certificate is issued by a certificate authority this machine does not trust: if it is an internal (hospital) CA, add its certificate (PEM) to http.tls.ca_files"
            ),
            "{report}"
        );
        assert_eq!(
            report.finding(Check::AuthorizedSearch).unwrap().status,
            Status::Skipped
        );
    });
}

#[test]
fn the_wrong_host_name_is_named() {
    let pki = Pki::new();
    runtime().block_on(async {
        let addr = serve(pki.server_config(false)).await;
        // The certificate names 127.0.0.1, not localhost.
        let mut config = config(addr);
        config.base_url = format!("https://localhost:{}/fhir", addr.port());
        config.http.tls.ca_files = vec![pki.path("root-ca.pem")];
        let report = run_checks(&config).await;
        let finding = report.finding(Check::CapabilityStatement).unwrap();
        assert_eq!(finding.status, Status::Fail, "{report}");
        assert!(
            finding
                .message
                .contains("the server's certificate is not issued for the host name in the url"),
            "{report}"
        );
    });
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::new();
    runtime().block_on(async {
        let addr = serve(pki.server_config(true)).await;
        let mut without = config(addr);
        without.http.tls.ca_files = vec![pki.path("root-ca.pem")];
        // In TLS 1.3 the client sends its request before the server has checked its
        // certificate; now and then (about one run in fifty here) the server's alert saying why
        // is lost as the connection closes, and the client can only say the connection closed.
        // Every attempt must fail; one of three must name mutual TLS.
        let mut reports = Vec::new();
        for _ in 0..3 {
            let report = run_checks(&without).await;
            let finding = report.finding(Check::CapabilityStatement).unwrap();
            assert_eq!(finding.status, Status::Fail, "{report}");
            let named = finding.message.contains(
                "the server requires a client certificate (mutual tls): set http.tls.client_certificate and http.tls.client_key",
            );
            reports.push(report.to_string());
            if named {
                break;
            }
        }
        assert!(
            reports.last().is_some_and(|r| r.contains("mutual tls")),
            "no attempt named mutual tls: {reports:#?}"
        );

        let mut with = without.clone();
        with.http.tls.client_certificate = Some(pki.path("client.pem"));
        with.http.tls.client_key = Some(SecretSource::File(pki.path("client-key.pem")));
        let report = run_checks(&with).await;
        assert!(report.is_ok(), "{report}");
        assert!(
            report
                .finding(Check::TransportSecurity)
                .unwrap()
                .message
                .contains("client certificate configured (mutual tls)"),
            "{report}"
        );
    });
}

#[test]
fn unusable_tls_files_are_named_before_anything_is_sent() {
    let pki = Pki::new();
    runtime().block_on(async {
        // Nothing listens here, and nothing needs to: the files fail first.
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let cases: Vec<(FhirClientConfig, &str)> = vec![
            (
                {
                    let mut c = config(addr);
                    c.http.tls.ca_files = vec![pki.path("missing.pem")];
                    c
                },
                "cannot use http.tls.ca_files[0] (",
            ),
            (
                {
                    let mut c = config(addr);
                    c.http.tls.ca_files = vec![pki.path("root-ca.der")];
                    c
                },
                "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA certificate in PEM form",
            ),
            (
                {
                    let mut c = config(addr);
                    c.http.tls.client_certificate = Some(pki.path("client.pem"));
                    // The certificate where the key should be.
                    c.http.tls.client_key = Some(SecretSource::File(pki.path("client.pem")));
                    c
                },
                "it holds no usable private key",
            ),
        ];
        for (config, expected) in cases {
            let err = iomt_fhir_client::FhirClient::new(&config).unwrap_err();
            assert!(matches!(err, FhirClientError::Tls { .. }), "{err}");
            assert!(err.is_systemic());
            let report = run_checks(&config).await;
            let finding = report.finding(Check::TransportSecurity).unwrap();
            assert_eq!(finding.status, Status::Fail, "{report}");
            assert!(finding.message.contains(expected), "{report}");
            assert_eq!(
                report.finding(Check::CapabilityStatement).unwrap().status,
                Status::Skipped
            );
        }
        assert!(
            run_checks(&{
                let mut c = config(addr);
                c.http.tls.ca_files = vec![pki.path("missing.pem")];
                c
            })
            .await
            .to_string()
            .contains("cannot read the file"),
        );
    });
}
