//! `iomt validate`: load mappings exactly as processing would, and report every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use iomt_normalize::DeviceMapping;

use super::read_mapping;
use crate::defaults;

/// Arguments of `iomt validate`.
#[derive(clap::Args)]
pub struct Args {
    /// The device mapping (devicecontent.json); the embedded example when absent.
    #[arg(long, value_name = "FILE")]
    device_mapping: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command; exit status 1 when any error was found.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (text, name) = read_mapping(
        args.device_mapping.as_deref(),
        defaults::DEVICE_MAPPING,
        defaults::DEVICE_MAPPING_NAME,
    )?;
    let (mapping, errors) = DeviceMapping::load_lenient(&text);
    if args.json {
        let render = |e: &iomt_normalize::TemplateError| {
            serde_json::json!({
                "class": e.class.name(),
                "severity": e.class.severity().as_str(),
                "message": e.message,
                "templateIndex": e.template_index,
                "typeName": e.type_name,
                "field": e.field,
                "line": e.pos.map(|p| p.line),
                "column": e.pos.map(|p| p.column),
            })
        };
        let report = serde_json::json!({
            "deviceMapping": {
                "file": name,
                "templates": mapping.templates().len(),
                "errors": errors.iter().map(render).collect::<Vec<_>>(),
                "warnings": mapping.warnings().iter().map(render).collect::<Vec<_>>(),
            }
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in mapping.warnings() {
            println!("{name}: warning: {w}");
        }
        for e in &errors {
            println!("{name}: error: {e} [{}]", e.class);
        }
        if errors.is_empty() {
            println!("{name}: ok, {} template(s)", mapping.templates().len());
        } else {
            println!("{name}: {} error(s)", errors.len());
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
