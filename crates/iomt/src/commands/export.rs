//! `iomt export`: the local FHIR store's resources as FHIR NDJSON (one resource per line), to
//! look at what the demo wrote or to load it into a real FHIR server (`$import`, or a bundle
//! per line).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use iomt_runtime::PipelineConfig;
use iomt_store::{LocalFhirStore, LocalStoreConfig};

#[derive(clap::Args)]
pub struct Args {
    /// The service configuration (its destination must be `local`).
    #[arg(long, default_value = "iomt-data/pipeline.yaml")]
    config: PathBuf,
    /// Resource types to export (repeatable; default: Patient, Device, Encounter, Observation).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = PipelineConfig::load(&args.config)?;
    let path = config.local_store_path().with_context(|| {
        format!(
            "{} writes to a FHIR server, not the local store: read the Observations there",
            args.config.display()
        )
    })?;
    if !path.exists() {
        anyhow::bail!(
            "no local store at {}: has the service run with this configuration?",
            path.display()
        );
    }
    let store = LocalFhirStore::open(&path, LocalStoreConfig::default())
        .with_context(|| format!("cannot open the local store {}", path.display()))?;
    let default_types = ["Patient", "Device", "Encounter", "Observation"];
    let types: Vec<&str> = if args.types.is_empty() {
        default_types.to_vec()
    } else {
        args.types.iter().map(String::as_str).collect()
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let count = store.export_ndjson(&mut out, &types)?;
    out.flush()?;
    eprintln!("exported {count} resource(s)");
    Ok(ExitCode::SUCCESS)
}
