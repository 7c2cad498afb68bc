//! TLS trust and client certificates ([`TlsConfig`]) applied to the HTTP client.
//!
//! Hospitals often run their FHIR servers (and identity providers) with certificates issued by
//! an internal CA that no operating system trusts, and some require mutual TLS. Rather than
//! asking operators to change the machine's trust store, the CA files are named in the
//! configuration and trusted by this client only.
//!
//! # What must hold
//! * Extra CAs are *added* to the system's roots unless `system_roots: false`; verification is
//!   never switched off (there is no "accept invalid certificates" setting, on purpose).
//! * Every file is read and parsed here, when the client is built, so a wrong path or a DER
//!   file given where PEM is expected fails at startup (and in `iomt check`) naming the setting,
//!   not later as an opaque handshake failure.

use std::path::Path;

use crate::config::TlsConfig;
use crate::error::FhirClientError;

/// `builder` with the CAs and client identity of `config`.
pub(crate) fn apply(
    mut builder: reqwest::ClientBuilder,
    config: &TlsConfig,
) -> Result<reqwest::ClientBuilder, FhirClientError> {
    let mut roots = Vec::new();
    for (i, path) in config.ca_files.iter().enumerate() {
        let setting = || format!("http.tls.ca_files[{i}] ({})", path.display());
        let pem = read(path, &setting)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            tls_error(
                setting(),
                format!("the file is not valid PEM ({e}): give the CA certificate in PEM form"),
            )
        })?;
        if certs.is_empty() {
            return Err(tls_error(
                setting(),
                "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA certificate in PEM form (convert a DER file with `openssl x509 -inform der -in ca.der -out ca.pem`)",
            ));
        }
        roots.extend(certs);
    }
    if !roots.is_empty() {
        builder = if config.system_roots {
            builder.tls_certs_merge(roots)
        } else {
            builder.tls_certs_only(roots)
        };
    }
    if let (Some(cert_path), Some(key_source)) = (&config.client_certificate, &config.client_key) {
        let setting = || format!("http.tls.client_certificate ({})", cert_path.display());
        let mut pem = read(cert_path, &setting)?;
        let chain = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
        if chain.is_empty() {
            return Err(tls_error(
                setting(),
                "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the client certificate in PEM form",
            ));
        }
        let key = key_source
            .resolve()
            .map_err(|source| FhirClientError::Secret {
                setting: "http.tls.client_key",
                source,
            })?;
        pem.push(b'\n');
        pem.extend_from_slice(key.expose().as_bytes());
        pem.push(b'\n');
        let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
            tls_error(
                format!("http.tls.client_key ({key_source})"),
                "it holds no usable private key: give the client certificate's key in PEM form (BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY, unencrypted)",
            )
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

fn read(path: &Path, setting: &impl Fn() -> String) -> Result<Vec<u8>, FhirClientError> {
    std::fs::read(path).map_err(|e| {
        tls_error(
            setting(),
            format!("cannot read the file ({e}): check the path and its permissions"),
        )
    })
}

fn tls_error(setting: String, reason: impl Into<String>) -> FhirClientError {
    FhirClientError::Tls {
        setting,
        reason: reason.into(),
    }
}
