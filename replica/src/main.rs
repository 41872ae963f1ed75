//! `replica`: parse flags, start tracing, load and validate config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use proto_common::logging::LogFormat;
use replica::config::Options;

/// jemalloc keeps and reuses the memory of large transient buffers (4 MiB
/// replication and snapshot chunks); the system allocator returned it to
/// the kernel and faulted in fresh zeroed pages for every chunk.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "replica",
    version,
    about = "understudy replica: a durable, replicated key-value service"
)]
struct Cli {
    /// Log lines as text or as one JSON object per line (levels and
    /// filters: UNDERSTUDY_LOG, e.g. info or debug).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "UNDERSTUDY_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a replica. Without --arbiter it is standalone (its own active).
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// TOML config file; flags and UNDERSTUDY_* variables override it.
    #[arg(long, env = "UNDERSTUDY_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: Options,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    proto_common::logging::init(cli.log_format);
    let Command::Run(args) = cli.command;
    if let Err(e) = replica::failpoint::arm_from_env() {
        return fail(&format!("invalid configuration: {e}"));
    }
    let file = match args.config.as_deref().map(Options::from_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return fail(&e.to_string()),
    };
    let mut options = args.options;
    options.token = std::env::var("UNDERSTUDY_TOKEN").ok();
    let settings = match options.over(file).resolve() {
        Ok(s) => s,
        Err(e) => return fail(&format!("invalid configuration: {e}")),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(replica::server::serve(settings, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("replica: {message}");
    ExitCode::from(2)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
