//! `iomt normalize`: NDJSON device messages in, wire-format measurements out.
//!
//! Each input line is one message body (wrapped as `{Body, Properties, SystemProperties}`, as
//! the original wraps every event), or with `--envelope` an already wrapped event. Measurements
//! go to stdout, one per line; each failed line writes one JSON object to stderr with its line
//! number, error class and message, and the exit status is 1 when any line failed. A failed
//! line never stops the others.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use iomt_debugger::enqueued_time;
use iomt_normalize::{DeviceMapping, EnvelopeBuilder, parse_token};

use super::{for_each_line, open_input, read_mapping};
use crate::defaults;

/// Arguments of `iomt normalize`.
#[derive(clap::Args)]
pub struct Args {
    /// The device mapping (devicecontent.json); the embedded example when absent.
    #[arg(long, value_name = "FILE")]
    device_mapping: Option<PathBuf>,
    /// Each line is already an event envelope `{Body, Properties, SystemProperties}`.
    #[arg(long)]
    envelope: bool,
    /// NDJSON input; standard input when absent or `-`.
    input: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (text, name) = read_mapping(
        args.device_mapping.as_deref(),
        defaults::DEVICE_MAPPING,
        defaults::DEVICE_MAPPING_NAME,
    )?;
    let mapping =
        DeviceMapping::from_json_str(&text).with_context(|| format!("{name} cannot be used"))?;
    let reader = open_input(args.input.as_deref())?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let mut builder = EnvelopeBuilder::new();
    let mut measurements = Vec::new();
    let mut failed = 0usize;
    for_each_line(reader, |line_number, line| {
        let token = if args.envelope {
            parse_token(&line)
        } else {
            builder.build(&line, &[], &[])
        };
        measurements.clear();
        let result = token.and_then(|token| {
            mapping.normalize_into(&token, &mut measurements)?;
            Ok(enqueued_time(&token))
        });
        match result {
            Ok(ingestion) => {
                for m in &mut measurements {
                    m.ingestion_time_utc = ingestion;
                    writeln!(out, "{}", m.to_wire_json())?;
                }
            }
            Err(e) => {
                failed += 1;
                let mut report = serde_json::json!({
                    "line": line_number,
                    "class": e.class().name(),
                    "message": e.to_string(),
                });
                if let Some(origin) = e.origin() {
                    report["templateIndex"] = origin.template_index.into();
                    report["typeName"] = origin.type_name.clone().into();
                }
                writeln!(err, "{report}")?;
            }
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
