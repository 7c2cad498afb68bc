//! `iomt check` for the FHIR side: can the connector reach the server, get a token, and write
//! what it needs to write? Each finding says in plain words what is wrong and what to change.
//!
//! [`run_checks`] runs, in order, stopping where a later check could only repeat an earlier
//! failure:
//! 1. **configuration**: [`FhirClientConfig::validate`], every problem with its path;
//! 2. **secrets**: the client secret, token or key can be read (and the key signs); a secret
//!    written inline in the configuration is a warning;
//! 3. **transport security**: the TLS files (`http.tls`: extra CAs, client certificate and
//!    key) can be read and parsed; a token sent over plain `http` to a non-loopback host is a
//!    warning. A failed handshake later says why (an untrusted internal CA points at
//!    `http.tls.ca_files`);
//! 4. **dns**: the FHIR and token hosts resolve;
//! 5. **token**: the token endpoint issues a token (`invalid_client` → the id or secret is
//!    wrong, …);
//! 6. **capability statement**: `GET [base]/metadata` answers with a `CapabilityStatement`
//!    (404 → the base URL's path is wrong, 401 → the token is not for this server, …);
//! 7. **fhir version**: it is R4 (`4.0.x`);
//! 8. **interactions**: the statement lists what the connector uses (update with
//!    client-assigned ids, search by identifier, `batch` when bundles are on); statements are
//!    often incomplete, so a missing entry is a warning, and only `updateCreate: false` fails;
//! 9. **authorized search**: a Device and an Observation search with the token succeed (the
//!    capability statement is often public, so this is where 401/403 shows).
//!
//! The `iomt check` command prints [`CheckReport`] (its `Display` is the checklist) and exits
//! non-zero when [`CheckReport::is_ok`] is false.

use std::fmt;

use serde_json::Value;

use crate::config::{AuthConfig, FhirClientConfig, IdentityMode, TlsConfig};
use crate::error::{ConnectFailure, FhirClientError, Interaction, Operation};
use crate::http::FhirClient;
use crate::secret::SecretSource;

/// What a check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Check {
    /// The configuration's values.
    Configuration,
    /// Secrets and keys.
    Secrets,
    /// Whether tokens travel encrypted.
    TransportSecurity,
    /// Host name resolution.
    Dns,
    /// The token endpoint.
    Token,
    /// `GET [base]/metadata`.
    CapabilityStatement,
    /// The server's FHIR version.
    FhirVersion,
    /// The interactions the connector uses.
    Interactions,
    /// Searches with the token.
    AuthorizedSearch,
}

impl Check {
    /// The check's name in the checklist.
    pub fn name(self) -> &'static str {
        match self {
            Check::Configuration => "configuration",
            Check::Secrets => "secrets",
            Check::TransportSecurity => "transport security",
            Check::Dns => "dns",
            Check::Token => "token",
            Check::CapabilityStatement => "capability statement",
            Check::FhirVersion => "fhir version",
            Check::Interactions => "interactions",
            Check::AuthorizedSearch => "authorized search",
        }
    }
}

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but something should be looked at.
    Warn,
    /// The connector cannot work this way.
    Fail,
    /// Not run, because an earlier check failed.
    Skipped,
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub check: Check,
    /// How it went.
    pub status: Status,
    /// What was found, in plain words; for failures, what to change.
    pub message: String,
}

/// What the capability statement says about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// `fhirVersion` (`4.0.1`).
    pub fhir_version: Option<String>,
    /// `software.name` and `software.version`.
    pub software: Option<String>,
    /// The statement itself.
    pub statement: Value,
}

/// The result of [`run_checks`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    /// The findings, in the order the checks ran.
    pub findings: Vec<Finding>,
    /// What the server said about itself, when it was reached.
    pub server: Option<ServerInfo>,
}

impl CheckReport {
    /// Whether no check failed (warnings allowed).
    pub fn is_ok(&self) -> bool {
        !self.findings.iter().any(|f| f.status == Status::Fail)
    }

    /// The finding of `check`, if it ran.
    pub fn finding(&self, check: Check) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }

    fn push(&mut self, check: Check, status: Status, message: impl Into<String>) {
        self.findings.push(Finding {
            check,
            status,
            message: message.into(),
        });
    }

    fn skip_rest(&mut self, from: &[Check]) {
        for check in from {
            self.push(*check, Status::Skipped, "not run: an earlier check failed");
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let mark = match finding.status {
                Status::Pass => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skipped => "skip",
            };
            writeln!(f, "[{mark}] {}: {}", finding.check.name(), finding.message)?;
        }
        Ok(())
    }
}

/// Runs every check against the configured server; see the module docs for the list.
pub async fn run_checks(config: &FhirClientConfig) -> CheckReport {
    let mut report = CheckReport::default();
    const AFTER_CONFIG: &[Check] = &[
        Check::Secrets,
        Check::TransportSecurity,
        Check::Dns,
        Check::Token,
        Check::CapabilityStatement,
        Check::FhirVersion,
        Check::Interactions,
        Check::AuthorizedSearch,
    ];
    if let Err(errors) = config.validate() {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        report.push(Check::Configuration, Status::Fail, text.join("; "));
        report.skip_rest(AFTER_CONFIG);
        return report;
    }
    report.push(Check::Configuration, Status::Pass, "valid");

    // Secrets and keys, then the TLS files (read in that order when the client is built).
    let client = FhirClient::new(config);
    match &client {
        Err(e @ FhirClientError::Secret { .. }) | Err(e @ FhirClientError::PrivateKey { .. }) => {
            report.push(Check::Secrets, Status::Fail, e.to_string());
            report.skip_rest(&AFTER_CONFIG[1..]);
            return report;
        }
        _ => match inline_secret(config) {
            Some(setting) => report.push(
                Check::Secrets,
                Status::Warn,
                format!("{setting} is written in the configuration; use {{env: NAME}} or {{file: PATH}} outside tests"),
            ),
            None if matches!(config.auth, AuthConfig::None) && config.http.tls.client_key.is_none() => {
                report.push(Check::Secrets, Status::Pass, "none needed (auth type none)")
            }
            None => report.push(Check::Secrets, Status::Pass, "read"),
        },
    }
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            report.push(Check::TransportSecurity, Status::Fail, e.to_string());
            report.skip_rest(&AFTER_CONFIG[2..]);
            return report;
        }
    };

    // Transport security.
    let base = client.base_url().clone();
    let token_url = token_url(&config.auth).and_then(|u| url::Url::parse(u).ok());
    let plain: Vec<String> = std::iter::once(&base)
        .chain(token_url.as_ref())
        .filter(|u| u.scheme() == "http" && !is_loopback(u))
        .map(|u| u.host_str().unwrap_or_default().to_owned())
        .collect();
    if !plain.is_empty() && !matches!(config.auth, AuthConfig::None) {
        report.push(
            Check::TransportSecurity,
            Status::Warn,
            format!(
                "credentials would travel unencrypted to {} (http): use https",
                plain.join(", ")
            ),
        );
    } else {
        report.push(
            Check::TransportSecurity,
            Status::Pass,
            tls_summary(&config.http.tls, &base),
        );
    }

    // DNS.
    let mut dns_failed = false;
    for (what, url) in std::iter::once(("base_url", &base))
        .chain(token_url.as_ref().map(|u| ("auth.token_url", u)))
    {
        let Some(host) = url.host_str() else { continue };
        if url
            .host()
            .is_some_and(|h| !matches!(h, url::Host::Domain(_)))
        {
            continue;
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup = tokio::time::timeout(
            config.http.connect_timeout,
            tokio::net::lookup_host((host.to_owned(), port)),
        )
        .await
        .map(|r| r.map(|addrs| addrs.count()));
        match lookup {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => {
                dns_failed = true;
                report.push(
                    Check::Dns,
                    Status::Fail,
                    format!("cannot resolve {host} ({what}): check the host name for typos, and the machine's DNS settings"),
                );
            }
            Err(_) => {
                dns_failed = true;
                report.push(
                    Check::Dns,
                    Status::Fail,
                    format!(
                        "resolving {host} ({what}) timed out: check the machine's DNS settings"
                    ),
                );
            }
        }
    }
    if dns_failed {
        report.skip_rest(&AFTER_CONFIG[3..]);
        return report;
    }
    report.push(Check::Dns, Status::Pass, "host names resolve");

    // Token.
    if token_url.is_some() {
        match client.authenticate().await {
            Ok(()) => report.push(
                Check::Token,
                Status::Pass,
                format!(
                    "the token endpoint issued a token ({})",
                    config.auth.type_name()
                ),
            ),
            Err(e) => {
                report.push(Check::Token, Status::Fail, explain_token_failure(&e));
                report.skip_rest(&AFTER_CONFIG[4..]);
                return report;
            }
        }
    } else {
        report.push(
            Check::Token,
            Status::Pass,
            format!("no token endpoint (auth type {})", config.auth.type_name()),
        );
    }

    // Capability statement and version.
    let info = match client.capabilities().await {
        Ok(statement) => {
            if statement.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement")
            {
                report.push(
                    Check::CapabilityStatement,
                    Status::Fail,
                    "base_url answers /metadata, but not with a FHIR CapabilityStatement: is base_url the FHIR endpoint (…/fhir, …/R4) rather than a web page or API gateway root?",
                );
                report.skip_rest(&AFTER_CONFIG[5..]);
                return report;
            }
            server_info(statement)
        }
        Err(e) => {
            report.push(
                Check::CapabilityStatement,
                Status::Fail,
                explain_fhir_failure(&e, &config.auth, "base_url"),
            );
            report.skip_rest(&AFTER_CONFIG[5..]);
            return report;
        }
    };
    report.push(
        Check::CapabilityStatement,
        Status::Pass,
        match &info.software {
            Some(s) => format!("reached {s}"),
            None => "reached the server".to_owned(),
        },
    );
    match version_finding(info.fhir_version.as_deref()) {
        Ok(message) => report.push(Check::FhirVersion, Status::Pass, message),
        Err((status, message)) => report.push(Check::FhirVersion, status, message),
    }
    for (status, message) in interaction_findings(&info.statement, config) {
        report.push(Check::Interactions, status, message);
    }
    report.server = Some(info);

    // Authorized searches.
    let probe = "iomt-check-probe";
    let mut search_ok = true;
    for resource_type in ["Device", "Observation"] {
        if let Err(e) = client
            .search(resource_type, &[("identifier", probe), ("_count", "1")])
            .await
        {
            search_ok = false;
            report.push(
                Check::AuthorizedSearch,
                Status::Fail,
                format!(
                    "searching {resource_type} failed: {}",
                    explain_fhir_failure(&e, &config.auth, "base_url")
                ),
            );
        }
    }
    if search_ok {
        report.push(
            Check::AuthorizedSearch,
            Status::Pass,
            "Device and Observation searches are allowed",
        );
    }
    report
}

/// `GET [base]/metadata` and the server's version, as the persister's health check.
pub(crate) async fn probe_capabilities(client: &FhirClient) -> Result<ServerInfo, FhirClientError> {
    let operation = Operation::new(Interaction::Capabilities, "CapabilityStatement");
    let statement = client.capabilities().await?;
    if statement.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement") {
        return Err(FhirClientError::InvalidResponse {
            operation,
            reason: "the answer is not a CapabilityStatement: is base_url the fhir endpoint?"
                .into(),
        });
    }
    let info = server_info(statement);
    match version_finding(info.fhir_version.as_deref()) {
        Err((Status::Fail, message)) => Err(FhirClientError::InvalidResponse {
            operation,
            reason: message,
        }),
        _ => Ok(info),
    }
}

fn server_info(statement: Value) -> ServerInfo {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let software = statement.get("software").and_then(|s| {
        let name = text(s.get("name"))?;
        Some(match text(s.get("version")) {
            Some(v) => format!("{name} {v}"),
            None => name,
        })
    });
    ServerInfo {
        fhir_version: text(statement.get("fhirVersion")),
        software,
        statement,
    }
}

fn version_finding(version: Option<&str>) -> Result<String, (Status, String)> {
    match version {
        Some(v) if v.starts_with("4.0.") => Ok(format!("FHIR R4 ({v})")),
        Some(v) => {
            let release = match v.get(..3) {
                Some("1.0") => "DSTU2",
                Some("3.0") => "STU3",
                Some("4.3") => "R4B",
                Some("5.0") => "R5",
                _ => "not R4",
            };
            Err((
                Status::Fail,
                format!(
                    "the server speaks FHIR {v} ({release}); iomt writes FHIR R4 (4.0.1): point base_url at the server's R4 endpoint"
                ),
            ))
        }
        None => Err((
            Status::Warn,
            "the capability statement has no fhirVersion; iomt assumes R4".to_owned(),
        )),
    }
}

fn interaction_findings(statement: &Value, config: &FhirClientConfig) -> Vec<(Status, String)> {
    let rest = statement
        .get("rest")
        .and_then(Value::as_array)
        .and_then(|r| {
            r.iter()
                .find(|e| e.get("mode").and_then(Value::as_str) == Some("server"))
        });
    let Some(rest) = rest else {
        return vec![(
            Status::Warn,
            "the capability statement lists no server interactions; cannot tell what is supported"
                .into(),
        )];
    };
    let resource = |t: &str| {
        rest.get("resource")
            .and_then(Value::as_array)
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r.get("type").and_then(Value::as_str) == Some(t))
            })
    };
    let has = |r: &Value, code: &str| {
        r.get("interaction")
            .and_then(Value::as_array)
            .is_some_and(|is| {
                is.iter()
                    .any(|i| i.get("code").and_then(Value::as_str) == Some(code))
            })
    };
    let mut findings = Vec::new();
    let mut needed = vec![
        ("Observation", "update"),
        ("Observation", "search-type"),
        ("Device", "search-type"),
    ];
    if config.identity.mode == IdentityMode::Create {
        needed.extend([
            ("Device", "update"),
            ("Patient", "update"),
            ("Patient", "search-type"),
        ]);
    }
    if config.identity.mode == IdentityMode::LookupWithEncounter {
        needed.push(("Encounter", "search-type"));
    }
    let mut missing = Vec::new();
    for (t, code) in &needed {
        match resource(t) {
            Some(r) if has(r, code) => {}
            _ => missing.push(format!("{code} {t}")),
        }
    }
    for t in ["Observation", "Device", "Patient"] {
        if let Some(r) = resource(t)
            && r.get("updateCreate").and_then(Value::as_bool) == Some(false)
            && (t == "Observation" || config.identity.mode == IdentityMode::Create)
        {
            findings.push((
                Status::Fail,
                format!("the server does not allow creating {t} resources with client-assigned ids (updateCreate: false); iomt writes PUT {t}/<id>: enable update-as-create on the server"),
            ));
        }
    }
    if config.bundles.enabled {
        let batch = rest
            .get("interaction")
            .and_then(Value::as_array)
            .is_some_and(|is| {
                is.iter()
                    .any(|i| i.get("code").and_then(Value::as_str) == Some("batch"))
            });
        if !batch {
            missing.push("batch (bundles.enabled is on)".into());
        }
    }
    if missing.is_empty() {
        findings.push((
            Status::Pass,
            "the server lists every interaction iomt uses".into(),
        ));
    } else {
        findings.push((
            Status::Warn,
            format!(
                "the capability statement does not list: {} (statements are often incomplete; the authorized search below and the first writes will tell)",
                missing.join(", ")
            ),
        ));
    }
    findings
}

fn tls_summary(tls: &TlsConfig, base: &url::Url) -> String {
    let mut text = if base.scheme() == "https" {
        "https".to_owned()
    } else {
        "plain http to loopback, or no credentials sent".to_owned()
    };
    if !tls.ca_files.is_empty() {
        let n = tls.ca_files.len();
        text.push_str(&format!(
            "; trusting the CA certificates of {n} file{} (http.tls.ca_files){}",
            if n == 1 { "" } else { "s" },
            if tls.system_roots {
                " besides the system's"
            } else {
                " only"
            }
        ));
    }
    if tls.client_certificate.is_some() {
        text.push_str("; client certificate configured (mutual tls)");
    }
    text
}

fn inline_secret(config: &FhirClientConfig) -> Option<&'static str> {
    if config
        .http
        .tls
        .client_key
        .as_ref()
        .is_some_and(SecretSource::is_inline)
    {
        return Some("http.tls.client_key");
    }
    match &config.auth {
        AuthConfig::Bearer { token } if token.is_inline() => Some("auth.token"),
        AuthConfig::ClientCredentials { client_secret, .. } if client_secret.is_inline() => {
            Some("auth.client_secret")
        }
        AuthConfig::SmartBackend { private_key, .. } if private_key.is_inline() => {
            Some("auth.private_key")
        }
        _ => None,
    }
}

fn token_url(auth: &AuthConfig) -> Option<&str> {
    match auth {
        AuthConfig::ClientCredentials { token_url, .. }
        | AuthConfig::SmartBackend { token_url, .. } => Some(token_url),
        _ => None,
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn transport_words(failure: ConnectFailure, detail: &str, what: &str) -> String {
    match failure {
        ConnectFailure::Dns => {
            format!("cannot connect to {what}: cannot resolve its host name; check it for typos")
        }
        ConnectFailure::Refused => format!(
            "cannot connect to {what}: connection refused, nothing listens at its host and port; check the port and that the server runs"
        ),
        ConnectFailure::Tls => tls_words(detail, what),
        ConnectFailure::Closed => format!(
            "{what} closed the connection without answering (a plain-http port addressed with https://, or a proxy cutting the connection?)"
        ),
        ConnectFailure::Other => format!("cannot connect to {what} ({detail})"),
    }
}

/// A failed TLS handshake in plain words, from the verifier's complaint in `detail`.
fn tls_words(detail: &str, what: &str) -> String {
    let lower = detail.to_ascii_lowercase();
    let cause = if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        "the server's certificate is issued by a certificate authority this machine does not trust: if it is an internal (hospital) CA, add its certificate (PEM) to http.tls.ca_files"
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "the server's certificate is not issued for the host name in the url: use the host name the certificate names, or have the certificate reissued"
    } else if lower.contains("expired") {
        "the server's certificate has expired (or this machine's clock is wrong)"
    } else if lower.contains("notvalidyet") {
        "the server's certificate is not valid yet (or this machine's clock is wrong)"
    } else if lower.contains("revoked") {
        "the server's certificate is revoked"
    } else if lower.contains("certificaterequired") || lower.contains("certificate required") {
        "the server requires a client certificate (mutual tls): set http.tls.client_certificate and http.tls.client_key"
    } else if lower.contains("badcertificate")
        || lower.contains("bad certificate")
        || lower.contains("unknownca")
        || lower.contains("unknown ca")
    {
        "the server refused the client certificate: check http.tls.client_certificate and http.tls.client_key, and that the server trusts their CA"
    } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        "the port does not speak tls: if the server uses plain http, write http:// in the url"
    } else {
        "its certificate is not trusted by this machine or does not match the host name (or the port speaks plain http: use http://); add an internal CA to http.tls.ca_files"
    };
    format!("cannot connect to {what}: the tls handshake failed: {cause} ({detail})")
}

fn explain_token_failure(error: &FhirClientError) -> String {
    match error {
        FhirClientError::TokenRejected {
            status,
            error: code,
            description,
        } => {
            let detail = description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            match code.as_deref() {
                Some("invalid_client") | Some("unauthorized_client") => format!(
                    "the token endpoint rejected the client's credentials (http {status}, {}){detail}: check auth.client_id and the client secret, or the key registered for the client",
                    code.as_deref().unwrap_or_default()
                ),
                Some("invalid_scope") => format!(
                    "the token endpoint rejected the scope (invalid_scope){detail}: check auth.scope (Azure: https://<fhir-host>/.default; SMART: system/Observation.write …)"
                ),
                Some("invalid_grant") => format!(
                    "the token endpoint rejected the grant (invalid_grant){detail}: for SMART, check the key id (auth.key_id), the algorithm and the machine's clock"
                ),
                Some(other) => {
                    format!("the token endpoint refused a token (http {status}, {other}){detail}")
                }
                None if *status == 404 => {
                    "the token endpoint answers 404: check the path of auth.token_url".into()
                }
                None => format!(
                    "the token endpoint refused a token (http {status}){detail}: check auth.token_url and the client's registration"
                ),
            }
        }
        FhirClientError::Connection {
            failure, detail, ..
        } => transport_words(*failure, detail, "auth.token_url"),
        FhirClientError::Timeout { timeout, .. } => format!(
            "the token endpoint did not answer within {}: check auth.token_url and the network path",
            humantime::format_duration(*timeout)
        ),
        other => other.to_string(),
    }
}

fn explain_fhir_failure(error: &FhirClientError, auth: &AuthConfig, what: &str) -> String {
    match error {
        FhirClientError::Connection {
            failure, detail, ..
        } => transport_words(*failure, detail, what),
        FhirClientError::Timeout { timeout, .. } => format!(
            "the fhir server did not answer within {}: check {what} and the network path, or raise http.request_timeout",
            humantime::format_duration(*timeout)
        ),
        FhirClientError::Unauthorized { .. } if matches!(auth, AuthConfig::None) => {
            "the fhir server requires authentication (401): configure auth".into()
        }
        FhirClientError::Unauthorized { outcome, .. } => format!(
            "the fhir server rejected the token (401){}: the token is not for this server; check auth.scope or auth.resource (Azure: https://<fhir-host>/.default) and the audience the server expects",
            outcome
                .as_deref()
                .map(|o| format!(": {o}"))
                .unwrap_or_default()
        ),
        FhirClientError::Forbidden { outcome, .. } => format!(
            "the fhir server accepted the token but denies access (403){}: grant the client a role that may read and write (Azure: FHIR Data Contributor) or the SMART scopes",
            outcome
                .as_deref()
                .map(|o| format!(": {o}"))
                .unwrap_or_default()
        ),
        FhirClientError::Rejected { status: 404, .. } => format!(
            "{what} answers 404: no fhir server at this path; check the path (…/fhir, …/R4, …/baseR4)"
        ),
        FhirClientError::InvalidResponse { .. } => format!(
            "{what} answers, but not with fhir json: is it the fhir endpoint rather than a web page? ({error})"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_in_plain_words() {
        assert_eq!(version_finding(Some("4.0.1")), Ok("FHIR R4 (4.0.1)".into()));
        let (status, message) = version_finding(Some("5.0.0")).unwrap_err();
        assert_eq!(status, Status::Fail);
        assert_eq!(
            message,
            "the server speaks FHIR 5.0.0 (R5); iomt writes FHIR R4 (4.0.1): point base_url at the server's R4 endpoint"
        );
        assert_eq!(version_finding(None).unwrap_err().0, Status::Warn);
    }

    #[test]
    fn interactions_from_the_statement() {
        let statement = json!({"rest": [{"mode": "server", "resource": [
            {"type": "Observation", "updateCreate": false,
             "interaction": [{"code": "update"}, {"code": "search-type"}]},
            {"type": "Device", "interaction": [{"code": "search-type"}]}
        ]}]});
        let mut config = FhirClientConfig::new("http://x");
        config.identity.mode = IdentityMode::LookupWithEncounter;
        let findings = interaction_findings(&statement, &config);
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert_eq!(findings[0].0, Status::Fail);
        assert!(findings[0].1.contains("updateCreate: false"));
        assert_eq!(findings[1].0, Status::Warn);
        assert!(
            findings[1].1.contains("search-type Encounter"),
            "{findings:?}"
        );
    }

    #[tokio::test]
    async fn invalid_configuration_stops_early() {
        let report = run_checks(&FhirClientConfig::new("not a url")).await;
        assert!(!report.is_ok());
        assert_eq!(report.findings[0].status, Status::Fail);
        assert!(
            report.findings[1..]
                .iter()
                .all(|f| f.status == Status::Skipped)
        );
        let text = report.to_string();
        assert!(
            text.starts_with("[FAIL] configuration: base_url: must be an absolute http(s) url"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn connection_refused_in_plain_words() {
        // Bind and drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = FhirClientConfig::new(format!("http://127.0.0.1:{port}/fhir"));
        config.retry.max_attempts = std::num::NonZeroU32::new(1).unwrap();
        let report = run_checks(&config).await;
        let finding = report.finding(Check::CapabilityStatement).unwrap();
        assert_eq!(finding.status, Status::Fail);
        assert!(
            finding.message.starts_with(
                "cannot connect to base_url: connection refused, nothing listens at its host and port"
            ),
            "{}",
            finding.message
        );
    }

    #[test]
    fn tls_failures_in_plain_words() {
        let words = |detail: &str| tls_words(detail, "base_url");
        assert!(
            words("client error (Connect): invalid peer certificate: UnknownIssuer")
                .contains("add its certificate (PEM) to http.tls.ca_files")
        );
        assert!(
            words("invalid peer certificate: NotValidForName")
                .contains("not issued for the host name")
        );
        assert!(
            words("received fatal alert: CertificateRequired")
                .contains("set http.tls.client_certificate and http.tls.client_key")
        );
        assert!(
            words("received corrupt message of type InvalidContentType").contains("write http://")
        );
        assert!(
            words("something new")
                .starts_with("cannot connect to base_url: the tls handshake failed")
        );
    }

    #[test]
    fn secret_source_in_findings_is_never_the_secret() {
        let auth = AuthConfig::Bearer {
            token: crate::secret::SecretSource::Value(crate::secret::Secret::new("s3cr3t")),
        };
        let mut config = FhirClientConfig::new("https://x/fhir");
        config.auth = auth;
        assert_eq!(inline_secret(&config), Some("auth.token"));
    }
}
