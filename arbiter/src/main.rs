//! `arbiter`: parse flags, start tracing, then either run the arbiter
//! (`arbiter run`) or call a running one (`status`, `switchover`,
//! `maintenance`, `params`). Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use arbiter::cli::OperatorCommand;
use arbiter::config::{self, Options};
use clap::{Args, Parser, Subcommand};
use proto_common::logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "arbiter",
    version,
    about = "understudy arbiter: failure detection, failover and the sync set"
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
    /// Run the arbiter.
    Run(Box<RunArgs>),
    #[command(flatten)]
    Operator(OperatorCommand),
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), 2),
    };
    match cli.command {
        Command::Run(args) => {
            let RunArgs { config, options } = *args;
            if let Err(e) = arbiter::failpoint::arm_from_env() {
                return fail(&format!("invalid configuration: {e}"), 2);
            }
            let settings = match config::load(options, config.as_deref()) {
                Ok(s) => s,
                Err(e) => return fail(&format!("invalid configuration: {e}"), 2),
            };
            match runtime.block_on(arbiter::server::serve(settings, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, 2),
            }
        }
        Command::Operator(cmd) => match runtime.block_on(cmd.execute()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string(), e.exit_code()),
        },
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("arbiter: {message}");
    ExitCode::from(code)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
