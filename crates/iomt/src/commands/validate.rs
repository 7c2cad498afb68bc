//! `iomt validate`: load mappings exactly as processing would, and report every problem.
//!
//! With `--fhir-mapping` the FHIR mapping is checked too, and so are the cross checks of the
//! two (a device type without FHIR template, a device value no FHIR template reads). Errors
//! make the exit status 1; warnings do not. Without either mapping option the embedded example
//! pair is checked; with only `--device-mapping`, only that mapping (it would make no sense to
//! cross check it against the example FHIR mapping).

use std::path::PathBuf;
use std::process::ExitCode;

use iomt_debugger::{MappingKind, ValidationReport};
use iomt_runtime::config::ConfigProblem;

use super::read_mapping;
use crate::defaults;

/// Arguments of `iomt validate`.
#[derive(clap::Args)]
pub struct Args {
    /// The device mapping (devicecontent.json); the embedded example when absent.
    #[arg(long, value_name = "FILE")]
    device_mapping: Option<PathBuf>,
    /// The FHIR mapping (fhirmapping.json), checked with the device mapping; the embedded
    /// example when neither mapping is given.
    #[arg(long, value_name = "FILE")]
    fhir_mapping: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Check a service configuration (`pipeline.yaml`) instead: its structure, its mapping
    /// files (every template error), listeners, TLS files, keys and destination settings,
    /// without starting anything or touching the network.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["device_mapping", "fhir_mapping"])]
    config: Option<PathBuf>,
}

/// Runs the command; exit status 1 when any error was found.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(config) = &args.config {
        return validate_config(config, args.json);
    }
    let (device_text, device_name) = read_mapping(
        args.device_mapping.as_deref(),
        defaults::DEVICE_MAPPING,
        defaults::DEVICE_MAPPING_NAME,
    )?;
    let fhir = match (&args.fhir_mapping, &args.device_mapping) {
        (Some(path), _) => Some(read_mapping(
            Some(path),
            defaults::FHIR_MAPPING,
            defaults::FHIR_MAPPING_NAME,
        )?),
        (None, None) => Some((
            defaults::FHIR_MAPPING.to_owned(),
            defaults::FHIR_MAPPING_NAME.to_owned(),
        )),
        (None, Some(_)) => None,
    };
    let report = iomt_debugger::validate(&device_text, fhir.as_ref().map(|(t, _)| t.as_str()));
    let fhir_name = fhir.as_ref().map(|(_, n)| n.as_str());
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["deviceMapping"]["file"] = device_name.into();
        if let Some(name) = fhir_name {
            json["fhirMapping"]["file"] = name.into();
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_text(&report, &device_name, fhir_name);
    }
    Ok(if report.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(report: &ValidationReport, device_name: &str, fhir_name: Option<&str>) {
    let name = |mapping: Option<MappingKind>| match mapping {
        Some(MappingKind::Fhir) => fhir_name.unwrap_or("fhir mapping"),
        _ => device_name,
    };
    for w in &report.warnings {
        println!("{}: warning: {w}", name(w.mapping));
    }
    for e in &report.errors {
        println!("{}: error: {e} [{}]", name(Some(e.mapping)), e.class);
    }
    let summarize = |mapping: MappingKind, templates: usize| {
        let errors = report
            .errors
            .iter()
            .filter(|e| e.mapping == mapping)
            .count();
        if errors == 0 {
            println!("{}: ok, {templates} template(s)", name(Some(mapping)));
        } else {
            println!("{}: {errors} error(s)", name(Some(mapping)));
        }
    };
    summarize(MappingKind::Device, report.device_mapping.templates);
    if let Some(fhir) = &report.fhir_mapping {
        summarize(MappingKind::Fhir, fhir.templates);
    }
}

/// Loads a service configuration and checks it, as `iomt validate --config` and `iomt check
/// --config` both do: the configuration, or every problem found (structure first, then the
/// rest). An unreadable file is an error.
pub(super) fn load_service_config(
    path: &std::path::Path,
) -> anyhow::Result<Result<iomt_runtime::PipelineConfig, Vec<ConfigProblem>>> {
    match iomt_runtime::PipelineConfig::load(path) {
        Ok(config) => Ok(config.validate().map(|()| config)),
        Err(iomt_runtime::config::ConfigError::Invalid { problems, .. }) => Ok(Err(problems)),
        Err(e) => Err(e.into()),
    }
}

/// Configuration problems as the JSON list both commands print.
pub(super) fn problems_json(problems: &[ConfigProblem]) -> serde_json::Value {
    problems
        .iter()
        .map(|p| serde_json::json!({"path": p.path, "line": p.line, "message": p.message}))
        .collect()
}

fn validate_config(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let problems = load_service_config(path)?.err().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "file": path.display().to_string(),
                "valid": problems.is_empty(),
                "problems": problems_json(&problems),
            }))?
        );
    } else if problems.is_empty() {
        println!("{}: valid", path.display());
    } else {
        println!("{}: {} problem(s)", path.display(), problems.len());
        for p in &problems {
            println!("  - {p}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
