//! `repl-bench`: replication throughput, lag and catch-up against a
//! three-member etcd (see `understudy_tests::repl_bench`).

use std::process::ExitCode;

use clap::Parser;
use understudy_tests::repl_bench::{self, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match repl_bench::run(&config).await {
        Ok(report) if config.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serializable")
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", repl_bench::run::format(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("repl-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
