//! `iomt test-mapping`: sample messages through both mappings, one JSON report out.
//!
//! The input is NDJSON as for `iomt normalize` (one message body per line, or with
//! `--envelope` one event envelope per line; standard input when absent or `-`). All messages
//! form one batch, grouped as the service groups a batch, with one Observation per group. The
//! report (see `docs/mapping-debugger.md`) goes to stdout; the exit status is 1 when a mapping
//! has errors, a message failed or a group produced no Observation, and 0 otherwise (warnings
//! do not count).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use iomt_debugger::{IdentityMode, Message, TestOptions};

use super::{for_each_line, open_input, read_mapping};
use crate::defaults;

/// The identity the Observations get.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Identity {
    /// Subject `Patient/<PatientId>`, device `Device/<DeviceId>` (the message identifiers).
    Create,
    /// Subject `Patient/<Patient-Reference-On-FHIR-Server>`, device `Device/<DeviceId>`.
    Lookup,
    /// No id, identifier, subject or device.
    None,
}

/// Arguments of `iomt test-mapping`.
#[derive(clap::Args)]
pub struct Args {
    /// The device mapping (devicecontent.json); the embedded example when absent.
    #[arg(long, value_name = "FILE")]
    device_mapping: Option<PathBuf>,
    /// The FHIR mapping (fhirmapping.json); the embedded example when absent.
    #[arg(long, value_name = "FILE")]
    fhir_mapping: Option<PathBuf>,
    /// How Observations reference their Patient and Device, as the original's Data Mapper did.
    #[arg(long, value_enum, default_value = "create")]
    identity: Identity,
    /// Each line is already an event envelope `{Body, Properties, SystemProperties}`.
    #[arg(long)]
    envelope: bool,
    /// Count identical errors together instead of listing each (for large samples).
    #[arg(long)]
    aggregate: bool,
    /// NDJSON input; standard input when absent or `-`.
    input: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (device, _) = read_mapping(
        args.device_mapping.as_deref(),
        defaults::DEVICE_MAPPING,
        defaults::DEVICE_MAPPING_NAME,
    )?;
    let (fhir, _) = read_mapping(
        args.fhir_mapping.as_deref(),
        defaults::FHIR_MAPPING,
        defaults::FHIR_MAPPING_NAME,
    )?;
    let mut messages = Vec::new();
    for_each_line(open_input(args.input.as_deref())?, |line, bytes| {
        let message = if args.envelope {
            Message::envelope(bytes)
        } else {
            Message::body(bytes)
        };
        messages.push(message.at_line(line));
        Ok(())
    })?;
    let identity = match args.identity {
        Identity::Create => IdentityMode::Create,
        Identity::Lookup => IdentityMode::Lookup,
        Identity::None => IdentityMode::None,
    };
    // The only clock read: the Observations' `issued`, as the service stamps it.
    let options = TestOptions::new(chrono::Utc::now())
        .with_identity(identity)
        .with_aggregation(args.aggregate);
    let report = iomt_debugger::test_mapping(&device, &fhir, &messages, &options);
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)?;
    Ok(if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
