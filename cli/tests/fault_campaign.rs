//! The fault campaign of issue 12 in its bounded CI configuration: three
//! real `berth master`s, two real `berth agent`s and a stream of real
//! `berth run`s, with leader SIGKILLs and SIGSTOPs, agent SIGKILLs and a
//! kill right after a burst of submissions (processes), or nftables cuts
//! between network namespaces (partitions). The campaign itself is
//! `berth_tests::campaign`; `docs/fault-campaign.md` says what it asserts
//! and how to run the longer one.
//!
//! The seed is fixed so CI runs the same plan each time; set
//! `BERTH_CAMPAIGN_SEED` to try another.

use std::io::Write;

use berth_tests::campaign::{self, Config, Variant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// The two variants load the machine; they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed() -> u64 {
    match std::env::var("BERTH_CAMPAIGN_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("BERTH_CAMPAIGN_SEED={s:?} is not a number")),
        Err(_) => 12,
    }
}

async fn campaign(variant: Variant) {
    let _turn = SERIAL.lock().await;
    let mut config = Config::ci(variant, BERTH.into(), seed());
    config.max_time = std::time::Duration::from_secs(420);
    let report = campaign::run(config)
        .await
        .unwrap_or_else(|e| panic!("the {} campaign could not run: {e:#}", variant.name()));
    // Straight to the file descriptor, past the test harness's capture,
    // so CI logs show the summary of a passing campaign too.
    let _ = writeln!(std::io::stdout().lock(), "{report}");
    assert!(
        report.violations.is_empty(),
        "the {} campaign found {} violations (summary above); the daemons' logs end:\n{}",
        variant.name(),
        report.violations.len(),
        report.log_tails
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_campaign_processes() {
    campaign(Variant::Processes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_campaign_partitions() {
    if let Some(why) = campaign::unavailable(Variant::Partitions) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the partitions campaign cannot run: {why}"
        );
        eprintln!("skipping fault_campaign_partitions: {why}");
        return;
    }
    campaign(Variant::Partitions).await;
}
