//! The `ingest-gateway` binary: parses the command line and hands over to `cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ingest_gateway::cli;

#[derive(Parser)]
#[command(
    name = "ingest-gateway",
    version,
    about = "A self-hosted ingestion gateway"
)]
struct Cli {
    /// The gateway configuration file.
    #[arg(long, global = true, default_value = "gateway.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a mapping template against a request, as the gateway would.
    Render(cli::render::RenderArgs),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let _ = &args.config;
    let result = match &args.command {
        Command::Render(r) => cli::render::run(r),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
