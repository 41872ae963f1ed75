//! `failover-bench`: parse the flags, run the rounds, print the report.
//! All logic is in `understudy_tests::failover_bench`.
//!
//! Exit status: 0 when every round was measured and every acknowledged
//! write was found, 1 when a write was lost or a round could not be
//! measured, 2 when the run could not be done (flags, binaries, a
//! cluster that never recovered).

use clap::Parser;
use understudy_tests::failover_bench::{run, Config};

#[tokio::main]
async fn main() {
    let config = Config::parse();
    let report = match run(&config).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("failover-bench: {error}");
            std::process::exit(2);
        }
    };
    if config.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    let unmeasured = report.rounds.iter().any(|r| r.gap_ms.is_none());
    if !report.verified || unmeasured {
        std::process::exit(1);
    }
}
