//! `loadgen`: parse the flags, run every target, print the report.
//! All logic is in `understudy_tests::loadgen`.
//!
//! Exit status: 0 when every target was measured (its errors, if any, are
//! in the report), 1 when a target could not be set up, 2 for a bad
//! invocation (flags, history file).

use clap::Parser;
use understudy_tests::loadgen::{format_table, run, Config};

#[tokio::main]
async fn main() {
    let config = Config::parse();
    let reports = match run(&config).await {
        Ok(reports) => reports,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(2);
        }
    };
    if config.json {
        for report in &reports {
            println!("{}", report.to_json_line());
        }
    } else {
        print!("{}", format_table(&reports, config.targets_all));
    }
    if reports.iter().any(|r| r.setup_error.is_some()) {
        std::process::exit(1);
    }
}
