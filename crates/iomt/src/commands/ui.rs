//! `iomt ui`: the mapping debugger page on its own, with no pipeline.
//!
//! The same page and API the service serves on its admin listener ([`iomt_runtime::ui`]), for
//! writing mappings on a laptop before any service runs. It listens on loopback by default;
//! the API needs a key all the same (mappings and sample messages may be health data, and other
//! local users or web pages could reach a loopback port): `--api-key-file`, or a random key
//! printed once to the terminal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use iomt_runtime::auth::Authenticator;
use iomt_runtime::ui::{self, UiApi};

/// Arguments of `iomt ui`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to listen (port 0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8182")]
    listen: SocketAddr,
    /// A file holding the API key the page must send; a random key is printed when absent.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
}

/// Runs the command until Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (key, generated) = match &args.api_key_file {
        Some(path) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the api key file {}", path.display()))?
                .trim()
                .to_owned();
            anyhow::ensure!(
                !key.is_empty(),
                "the api key file {} is empty: write a key into it",
                path.display()
            );
            (key, false)
        }
        None => (random_key()?, true),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = iomt_runtime::listener::bind(args.listen).await?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let api = UiApi::standalone(Authenticator::with_api_keys(&[key.as_str()]));
        let router = ui::standalone_router(Arc::new(api));
        eprintln!("iomt ui: the mapping debugger is at http://{addr}/ui/");
        if generated {
            eprintln!("  api key (shown once; the page asks for it): {key}");
        } else {
            eprintln!("  api key: the one in the --api-key-file");
        }
        eprintln!("  stop with Ctrl-C");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(iomt_runtime::listener::serve(
            listener, router, None, stop_rx,
        ));
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
        let _ = server.await;
        Ok(ExitCode::SUCCESS)
    })
}

fn random_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot make a random api key: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
