//! TLS for the service's listeners: a certificate chain and key from PEM files, served with
//! rustls (the same aws-lc-rs provider as the FHIR client).
//!
//! What must hold: a listener configured with TLS never falls back to plain HTTP; a bad
//! certificate or key stops the start with a message naming the file.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::config::TlsConfig;

/// Why a TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM block.
    #[error("cannot use {file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The certificate and key do not form a usable server configuration.
    #[error(
        "the tls certificate and key cannot be used together: {0}; check that the key belongs to the certificate"
    )]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        file: path.to_string_lossy().into_owned(),
        reason: reason.to_string(),
    }
}

/// Builds a rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN).
///
/// # Errors
/// [`TlsError`] naming the file that could not be used.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| file_error(&tls.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&tls.cert_file, e))?;
    if certs.is_empty() {
        return Err(file_error(
            &tls.cert_file,
            "no CERTIFICATE block found: give a PEM certificate chain",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| {
        file_error(
            &tls.key_file,
            format!("{e}: give a PEM private key (PKCS#8, PKCS#1 or SEC1)"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
