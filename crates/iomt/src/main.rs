//! `iomt`: the command-line front of the connector. It parses arguments and calls the
//! libraries; all behaviour lives in the library crates so the CLI, the service and the tests
//! share one code path.

mod commands;
mod defaults;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// IoMT device data to FHIR R4: runs, tests and debugs the original connector's mappings.
#[derive(Parser)]
#[command(name = "iomt", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks mapping files and reports every error with its template, field, line and column,
    /// and, given a FHIR mapping, the cross checks of the two mappings.
    Validate(commands::validate::Args),
    /// Normalizes device messages (NDJSON) into measurements in the original's wire format.
    Normalize(commands::normalize::Args),
    /// Runs sample messages (NDJSON) through a device and a FHIR mapping as one batch and
    /// prints one JSON report: measurements, Observations, errors and warnings.
    TestMapping(commands::test_mapping::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(args),
        Command::Normalize(args) => commands::normalize::run(args),
        Command::TestMapping(args) => commands::test_mapping::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
