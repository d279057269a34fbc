//! `campaign`: the fault campaign of issue 12 as long as you like. The CI
//! test (`cli/tests/fault_campaign.rs`) runs the same code with small
//! numbers; this binary takes a seed and a duration:
//!
//! ```sh
//! cargo build -p berth-cli -p berth-tests
//! target/debug/campaign --berth target/debug/berth --variant processes --seed 7 --duration 1800
//! ```
//!
//! It prints the report on stdout and exits 0 when berth kept every
//! promise, 1 when there were violations, 2 when it could not run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_tests::campaign::{self, Config, Variant};
use clap::Parser;

/// Runs the fault campaign against real berth processes.
#[derive(Debug, Parser)]
#[command(name = "campaign")]
struct Args {
    /// The berth binary to test.
    #[arg(long)]
    berth: PathBuf,
    /// processes (signals) or partitions (network namespaces; needs root).
    #[arg(long)]
    variant: Variant,
    /// Seeds every choice; the report prints it (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Go on for at least this many seconds.
    #[arg(long, default_value = "0", value_parser = seconds, allow_negative_numbers = true)]
    duration: Duration,
    /// Start at least this many `berth run`s (default: as in CI).
    #[arg(long)]
    runs: Option<usize>,
    /// Inject at least this many faults (default: as in CI).
    #[arg(long)]
    faults: Option<usize>,
    /// `berth run`s at once (1 to 8).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds a client may take to notice a frozen leader (the SIGSTOP
    /// bar counts 2 s from the end of it).
    #[arg(long, default_value = "5", value_parser = seconds, allow_negative_numbers = true)]
    heartbeat_timeout: Duration,
    /// The masters' --agent-ping-timeout (default: berth's, or 5 s for
    /// partitions).
    #[arg(long, value_parser = seconds, allow_negative_numbers = true)]
    agent_ping_timeout: Option<Duration>,
    /// Abort past this many seconds (default: the duration plus 15 minutes).
    #[arg(long, value_parser = seconds, allow_negative_numbers = true)]
    max_time: Option<Duration>,
    /// Keep the daemons' logs, data and marks in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// A positive number of seconds, at most a week.
fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=604_800.0).contains(&v) {
        return Err(format!("{s:?} must be between 0 and 604800 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("campaign: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    if let Some(why) = campaign::unavailable(args.variant) {
        eprintln!(
            "campaign: cannot run the {} variant: {why}",
            args.variant.name()
        );
        return ExitCode::from(2);
    }
    let mut config = Config::ci(args.variant, args.berth, seed);
    config.duration = args.duration;
    config.min_runs = args.runs.unwrap_or(config.min_runs);
    config.min_faults = args.faults.unwrap_or(config.min_faults);
    config.concurrency = args.concurrency;
    config.heartbeat_timeout = args.heartbeat_timeout;
    if args.agent_ping_timeout.is_some() {
        config.agent_ping_timeout = args.agent_ping_timeout;
    }
    config.max_time = args
        .max_time
        .unwrap_or(args.duration + Duration::from_secs(900));
    config.keep_dir = args.keep;
    // Ctrl-C drops the campaign, whose guards stop every process and
    // remove every namespace it made.
    let report = tokio::select! {
        r = campaign::run(config) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("campaign: interrupted; cleaned up");
            return ExitCode::from(2);
        }
    };
    match report {
        Ok(report) => {
            let _ = writeln!(std::io::stdout(), "{report}");
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                let _ = writeln!(
                    std::io::stderr(),
                    "the daemons' logs end:\n{}",
                    report.log_tails
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("campaign: {e:#}");
            ExitCode::from(2)
        }
    }
}
