//! The `ingest-gateway` binary: parses the command line and hands over to `cli`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ingest_gateway::cli;

/// jemalloc instead of the system allocator: the request path allocates on one worker thread
/// and frees on another (a batch's records), where glibc's arenas contend on a lock. Measured
/// in `benches/RESULTS.md`: about a fifth less CPU per request under load.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Serve the configured API.
    Serve {
        /// Listen on this address instead of the configured one.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate the configuration and its templates; print every problem.
    CheckConfig {
        /// Lint the request templates too (as `lint`).
        #[arg(long)]
        lint: bool,
    },
    /// Render each route's request templates against generated requests, hostile data
    /// included, and report output the route's service would refuse (exit status 1).
    Lint {
        /// Routes to lint, as "METHOD /path" (default: all).
        routes: Vec<String>,
    },
    /// Create the streams, buckets, delivery streams, queues and state machines declared
    /// under [resources]; existing ones are checked, never changed.
    Provision {
        /// Print the plan without creating anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the least-privilege IAM policy the configured routes need.
    IamPolicy {
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The AWS account id for resource ARNs.
        #[arg(long, default_value = "*")]
        account: String,
    },
    /// Make the running gateway load this configuration again, without a restart (through
    /// its admin listener; SIGHUP does the same). Prints what changed, or every error: the
    /// running configuration keeps serving then (exit status 2).
    Reload,
    /// Render a mapping template against a request, as the gateway would.
    Render(cli::render::RenderArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(cli::keys::KeysCommand),
    /// Write a gateway.toml, templates and models serving an API Gateway export (OpenAPI 3.0
    /// or Swagger 2.0, JSON or YAML); print what could not be translated.
    ImportOpenapi {
        file: PathBuf,
        /// Output directory (must not hold a gateway.toml yet).
        #[arg(long, default_value = "imported")]
        out: PathBuf,
    },
    /// Print the configuration's OpenAPI 3.0 document (what GET /openapi.json serves).
    ExportOpenapi,
    /// The durable spool: what waits, the records, and delivering them.
    #[command(subcommand)]
    Spool(cli::spool::SpoolCommand),
    /// Write a client package for the configured routes: typed methods, retries as the
    /// gateway means them, batch helpers that resend only failed records.
    Sdk {
        /// `typescript` or `python`.
        #[arg(long)]
        lang: String,
        /// Output directory (default `sdk-LANG`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Requests counted per key and UTC day.
    Usage {
        #[arg(long)]
        key: Option<String>,
        /// First day, YYYY-MM-DD (default today).
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (default today).
        #[arg(long)]
        to: Option<String>,
    },
}

/// The linter's exit status: 1 when a route has findings, 2 when it could not run.
fn lint_exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let result = match &args.command {
        Command::Render(r) => cli::render::run(&args.config, r),
        Command::CheckConfig { lint: false } => Ok(cli::check_config::run(&args.config)),
        Command::CheckConfig { lint: true } => {
            if !cli::check_config::run(&args.config) {
                return ExitCode::from(2);
            }
            return lint_exit(cli::lint::run(&args.config, &[]));
        }
        Command::Lint { routes } => return lint_exit(cli::lint::run(&args.config, routes)),
        Command::Serve { listen } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(cli::serve::run(&args.config, *listen)))
            .map(|()| true),
        Command::Provision { dry_run } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(cli::provision::run(&args.config, *dry_run))),
        Command::IamPolicy { region, account } => {
            cli::iam_policy::run(&args.config, region, account)
        }
        Command::Reload => cli::reload::run(&args.config),
        Command::Keys(k) => cli::keys::run(&args.config, k),
        Command::Spool(s) => cli::spool::run(&args.config, s),
        Command::ImportOpenapi { file, out } => cli::openapi::import(file, out),
        Command::ExportOpenapi => cli::openapi::export(&args.config),
        Command::Sdk { lang, out } => cli::sdk::run(&args.config, lang, out.as_deref()),
        Command::Usage { key, from, to } => {
            cli::keys::usage(&args.config, key.as_deref(), from.as_deref(), to.as_deref())
        }
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
