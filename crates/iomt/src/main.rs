//! `iomt`: the command-line front of the connector. It parses arguments and calls the
//! libraries; all behaviour lives in the library crates so the CLI, the service and the tests
//! share one code path.

mod commands;
mod defaults;

/// mimalloc rather than glibc's allocator, set up by `iomt_alloc::configure` in `main` (see
/// `iomt-alloc` for why); the service benchmark's resident memory is measured with the same
/// allocator and setting.
#[global_allocator]
static GLOBAL: iomt_alloc::MiMalloc = iomt_alloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// IoMT device data to FHIR R4: runs, tests and debugs the original connector's mappings.
#[derive(Parser)]
#[command(name = "iomt", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format for `iomt run` (`text` or `json`); the level comes from `RUST_LOG`
    /// (default `info`). Logs never contain message content or identifiers at `info`.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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
    /// Sends simulated, physiologically plausible device traffic to a running connector, or
    /// writes it as NDJSON (`--output`), in the shapes of the example mappings.
    Simulate(commands::simulate::Args),
    /// Sends device messages from NDJSON (or a dead-letter export) again, through the HTTP,
    /// MQTT or Kafka target or straight into the service's durable log.
    Replay(commands::replay::Args),
    /// Checks that the FHIR server can be reached and used: configuration, secrets, TLS, token,
    /// capability statement, FHIR version, permissions; says what to fix for each failure.
    Check(commands::check::Args),
    /// Runs the connector service (`--config pipeline.yaml`); without a configuration, the
    /// demo on embedded defaults: local store, simulated wearables, everything on loopback.
    Run(commands::run::Args),
    /// Lists, shows, redrives and purges what could not be processed, with why.
    DeadLetter(commands::dead_letter::Args),
    /// Writes the local FHIR store's resources as FHIR NDJSON.
    Export(commands::export::Args),
    /// Serves the mapping debugger web page on its own (no pipeline): edit a device and a FHIR
    /// mapping side by side and test them on sample messages as you type.
    Ui(commands::ui::Args),
}

fn main() -> ExitCode {
    iomt_alloc::configure();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(args),
        Command::Normalize(args) => commands::normalize::run(args),
        Command::TestMapping(args) => commands::test_mapping::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Run(args) => {
            init_logging(cli.log_format);
            commands::run::run(args)
        }
        Command::DeadLetter(args) => commands::dead_letter::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Ui(args) => commands::ui::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
