//! `iomt check`: can the connector reach the FHIR server, get a token and do its work?
//!
//! The checks themselves are [`iomt_fhir_client::run_checks`] (configuration, secrets, TLS
//! files, DNS, token, capability statement, FHIR version, interactions, an authorized search);
//! this module only finds the configuration, runs them and prints the checklist: one line per
//! finding, each failure saying what to change, then a summary line. `--json` prints the same
//! findings as one JSON object.
//!
//! `--config pipeline.yaml` checks a whole service configuration instead: the file is validated
//! as `iomt validate --config` does (nothing is contacted when it has problems), then the FHIR
//! destination gets the checks above and every broker is reached once: the MQTT source's (with a
//! probe client id that leaves the service's session alone), and the Kafka source's and the
//! scale-out topic's (a metadata request: the brokers answer and the topics exist).
//!
//! # Exit status
//! * 0: every check passed (warnings allowed);
//! * 1: a check that talks to the network failed (unreachable server, rejected credentials, not
//!   a FHIR R4 endpoint, …);
//! * 2: the command line or the configuration is unusable: an unreadable or malformed file, an
//!   invalid setting, a secret or TLS file that cannot be read. Nothing was sent then.
//!
//! The service's pipeline file will carry the same [`FhirClientConfig`] under `fhir:`; its
//! check reuses [`run_with_config`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use iomt_fhir_client::check::Check;
use iomt_fhir_client::{CheckReport, FhirClientConfig, Status, run_checks};

/// Arguments of `iomt check`.
#[derive(clap::Args)]
pub struct Args {
    /// A file holding the FHIR client configuration (`base_url`, `auth`, `http`, …; YAML, or
    /// JSON when the name ends in .json).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["fhir_url", "config"],
        conflicts_with_all = ["fhir_url", "config"]
    )]
    fhir_config: Option<PathBuf>,
    /// The FHIR base URL, for a server that needs no authentication (shorthand for a
    /// configuration with only `base_url`).
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    fhir_url: Option<String>,
    /// A service configuration (`pipeline.yaml`): validate it, then check its FHIR destination
    /// and connect to each of its brokers.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.config {
        return service::run(path, args.json);
    }
    let config = match (&args.fhir_config, args.fhir_url) {
        (Some(path), _) => load_config(path)?,
        (None, Some(url)) => FhirClientConfig::new(url),
        // clap requires one of the two.
        (None, None) => bail!("give --fhir-config FILE or --fhir-url URL"),
    };
    run_with_config(config, args.json)
}

/// Runs every check against `config`'s server and prints the findings (text, or JSON with
/// `json`); the exit status is as the module docs say.
///
/// It starts its own tokio runtime, so call it from synchronous code (`main`), not from inside
/// a runtime.
pub(crate) fn run_with_config(config: FhirClientConfig, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run_checks(&config));
    let target = display_url(&config.base_url);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&report, &target))?
        );
    } else {
        print_text(&report, &target, config.auth.type_name());
    }
    Ok(exit_code(&report))
}

/// Reads a [`FhirClientConfig`] from a YAML or JSON file (by extension).
fn load_config(path: &Path) -> anyhow::Result<FhirClientConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}; check the path", path.display()))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let parsed = match extension.as_deref() {
        Some("json") => serde_json::from_str(&text).map_err(anyhow::Error::from),
        Some("yaml" | "yml") => serde_saphyr::from_str(&text).map_err(anyhow::Error::from),
        _ => bail!(
            "{}: unknown configuration format; name the file .yaml, .yml or .json",
            path.display()
        ),
    };
    parsed.with_context(|| {
        format!(
            "{} is not a valid fhir client configuration; fix the setting named below",
            path.display()
        )
    })
}

/// The base URL as configured, without any user name or password in it.
fn display_url(base_url: &str) -> String {
    match url::Url::parse(base_url) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => base_url.to_owned(),
    }
}

/// 0 when nothing failed; 2 when the configuration (or a file or secret it names) is unusable,
/// which the checks find before sending anything; 1 for the other failures.
fn exit_code(report: &CheckReport) -> ExitCode {
    if report.is_ok() {
        return ExitCode::SUCCESS;
    }
    let configuration_failed = report.findings.iter().any(|f| {
        f.status == Status::Fail
            && matches!(
                f.check,
                Check::Configuration | Check::Secrets | Check::TransportSecurity
            )
    });
    ExitCode::from(if configuration_failed { 2 } else { 1 })
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "fail",
        Status::Skipped => "skipped",
    }
}

mod service {
    //! `iomt check --config`: the service configuration's destination and brokers.

    use std::path::Path;
    use std::process::ExitCode;
    use std::time::Duration;

    use anyhow::Context;
    use iomt_runtime::config::DestinationConfig;

    use super::{display_url, print_text, report_json};
    use crate::commands::validate::{load_service_config, problems_json};

    /// How long a broker probe may take before it counts as unreachable.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

    /// One broker's finding.
    struct SourceFinding {
        source: &'static str,
        target: String,
        /// What passed, or what failed and what to do.
        result: Result<String, String>,
    }

    pub(super) fn run(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
        let config = match load_service_config(path)? {
            Ok(config) => config,
            Err(problems) => return invalid(path, &problems, json),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let destination = match &config.destination {
            Some(DestinationConfig::Fhir(fhir)) => Some((
                runtime.block_on(iomt_fhir_client::run_checks(fhir)),
                display_url(&fhir.base_url),
                fhir.auth.type_name(),
            )),
            _ => None,
        };
        let mut sources = Vec::new();
        if let Some(mqtt) = &config.sources.mqtt {
            let probe = runtime.block_on(async {
                tokio::time::timeout(
                    PROBE_TIMEOUT,
                    iomt_runtime::ingest::mqtt::check_connection(mqtt),
                )
                .await
            });
            sources.push(SourceFinding {
                source: "mqtt",
                target: format!("{}:{}", mqtt.host, mqtt.port()),
                result: match probe {
                    Ok(Ok(())) => Ok("connected".into()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer from the broker within {} s: check the host, the port and \
                         any firewall in between",
                        PROBE_TIMEOUT.as_secs()
                    )),
                },
            });
        }
        let mut kafka = Vec::new();
        if let Some(source) = &config.sources.kafka {
            kafka.push(("kafka", source.connection(), source.topics.clone()));
        }
        if let Some(scale_out) = &config.scale_out {
            kafka.push((
                "scale_out",
                scale_out.connection(),
                vec![scale_out.normalized_topic.clone()],
            ));
        }
        for (source, connection, topics) in kafka {
            let target = connection
                .bootstrap_servers
                .clone()
                .unwrap_or_else(|| "the event hubs namespace".into());
            let found = runtime.block_on(iomt_runtime::kafka::check::check_topics(
                &connection,
                &topics,
                PROBE_TIMEOUT,
            ));
            let result = match found {
                Err(e) => Err(e),
                Ok(found) => {
                    let missing: Vec<&str> = found
                        .topics
                        .iter()
                        .filter(|(_, partitions)| partitions.is_none())
                        .map(|(name, _)| name.as_str())
                        .collect();
                    if missing.is_empty() {
                        let topics: Vec<String> = found
                            .topics
                            .iter()
                            .map(|(name, p)| format!("{name} ({} partitions)", p.unwrap_or(0)))
                            .collect();
                        Ok(format!("connected; topic {}", topics.join(", ")))
                    } else {
                        Err(format!(
                            "the brokers answered but have no topic {}: create it (or fix the \
                             name; the connector does not create topics)",
                            missing.join(", ")
                        ))
                    }
                }
            };
            sources.push(SourceFinding {
                source,
                target,
                result,
            });
        }
        let destination_ok = destination.as_ref().is_none_or(|(r, _, _)| r.is_ok());
        let sources_ok = sources.iter().all(|s| s.result.is_ok());
        if json {
            let list: Vec<serde_json::Value> = sources
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "source": s.source,
                        "target": s.target,
                        "status": if s.result.is_ok() { "pass" } else { "fail" },
                        "message": match &s.result { Ok(m) | Err(m) => m },
                    })
                })
                .collect();
            let value = serde_json::json!({
                "config": path.display().to_string(),
                "ok": destination_ok && sources_ok,
                "destination": destination.as_ref().map(|(r, t, _)| report_json(r, t)),
                "sources": list,
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            println!("{}: valid", path.display());
            match &destination {
                Some((report, target, auth)) => print_text(report, target, auth),
                None if config.destination.is_none() => {
                    println!("destination: none (role normalize writes to the normalized topic)")
                }
                None => println!("destination: the local store (nothing to reach)"),
            }
            for s in &sources {
                match &s.result {
                    Ok(m) => println!("[ok  ] {} broker at {}: {m}", s.source, s.target),
                    Err(e) => println!("[FAIL] {} broker at {}: {e}", s.source, s.target),
                }
            }
            if sources.is_empty() {
                println!("no broker sources configured");
            }
        }
        Ok(if destination_ok && sources_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    fn invalid(
        path: &Path,
        problems: &[iomt_runtime::config::ConfigProblem],
        json: bool,
    ) -> anyhow::Result<ExitCode> {
        if json {
            let value = serde_json::json!({
                "config": path.display().to_string(),
                "ok": false,
                "problems": problems_json(problems),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            println!(
                "{}: {} problem(s); nothing was contacted",
                path.display(),
                problems.len()
            );
            for p in problems {
                println!("  - {p}");
            }
        }
        Ok(ExitCode::from(2))
    }
}

fn print_text(report: &CheckReport, target: &str, auth: &str) {
    println!("checking the fhir server at {target} (auth: {auth})");
    print!("{report}");
    let failed = count(report, Status::Fail);
    let warned = count(report, Status::Warn);
    if failed == 0 && warned == 0 {
        println!("all checks passed");
    } else if failed == 0 {
        println!("all checks passed, {warned} with a warning: see the warn lines above");
    } else {
        println!(
            "{failed} check(s) failed: do what the FAIL line{} above say{}, then run iomt check again",
            if failed == 1 { "" } else { "s" },
            if failed == 1 { "s" } else { "" }
        );
    }
}

fn count(report: &CheckReport, status: Status) -> usize {
    report
        .findings
        .iter()
        .filter(|f| f.status == status)
        .count()
}

fn report_json(report: &CheckReport, target: &str) -> serde_json::Value {
    let findings: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "check": f.check.name(),
                "status": status_name(f.status),
                "message": f.message,
            })
        })
        .collect();
    let server = report.server.as_ref().map(|s| {
        serde_json::json!({
            "fhirVersion": s.fhir_version,
            "software": s.software,
        })
    });
    serde_json::json!({
        "baseUrl": target,
        "ok": report.is_ok(),
        "findings": findings,
        "server": server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_not_printed() {
        assert_eq!(
            display_url("https://user:pw@fhir.example.org/R4"),
            "https://fhir.example.org/R4"
        );
        assert_eq!(display_url("not a url"), "not a url");
        assert_eq!(display_url("http://h:1/fhir"), "http://h:1/fhir");
    }

    #[test]
    fn yaml_and_json_have_the_same_shape() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("fhir.yaml");
        std::fs::write(
            &yaml,
            "base_url: https://fhir.example.org/R4\n\
             auth:\n  type: client_credentials\n  token_url: https://login.example.org/token\n  \
             client_id: iomt\n  client_secret: { env: IOMT_FHIR_CLIENT_SECRET }\n\
             http:\n  request_timeout: 20s\n  tls:\n    ca_files: [/etc/iomt/ca.pem]\n",
        )
        .unwrap();
        let json = dir.path().join("fhir.json");
        std::fs::write(
            &json,
            r#"{"base_url": "https://fhir.example.org/R4",
                "auth": {"type": "client_credentials", "token_url": "https://login.example.org/token",
                         "client_id": "iomt", "client_secret": {"env": "IOMT_FHIR_CLIENT_SECRET"}},
                "http": {"request_timeout": "20s", "tls": {"ca_files": ["/etc/iomt/ca.pem"]}}}"#,
        )
        .unwrap();
        let from_yaml = load_config(&yaml).unwrap();
        assert_eq!(from_yaml, load_config(&json).unwrap());
        assert_eq!(
            from_yaml.http.request_timeout,
            std::time::Duration::from_secs(20)
        );
    }

    #[test]
    fn unknown_settings_and_formats_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("fhir.yml");
        std::fs::write(
            &yaml,
            "base_url: https://x/fhir\nretry:\n  max_atempts: 3\n",
        )
        .unwrap();
        let e = format!("{:#}", load_config(&yaml).unwrap_err());
        assert!(e.contains("max_atempts"), "{e}");
        let toml = dir.path().join("fhir.toml");
        std::fs::write(&toml, "base_url = 'https://x/fhir'\n").unwrap();
        let e = load_config(&toml).unwrap_err().to_string();
        assert!(
            e.ends_with("unknown configuration format; name the file .yaml, .yml or .json"),
            "{e}"
        );
    }
}
