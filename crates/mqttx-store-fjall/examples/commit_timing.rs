//! Prints how long `FjallJournal::open` and `commit` take on this machine: batches of 1 and
//! of 100 small Puts under each sync policy. A quick look, not a benchmark:
//!
//! ```text
//! cargo run --release -p mqttx-store-fjall --example commit_timing [DIR]
//! ```
//!
//! DIR (default: the system's temporary directory) is where the stores are made; give a
//! directory on the disk you mean to measure. Each store is removed afterwards.

use std::time::{Duration, Instant};

use mqttx_broker::{Journal, JournalOp, Table};
use mqttx_store_fjall::{FjallJournal, SyncPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let policies = [
        SyncPolicy::EveryBatch,
        SyncPolicy::Interval(Duration::from_millis(100)),
        SyncPolicy::None,
    ];
    println!(
        "| policy | open (new store) | commit, 1 put | commit, 100 puts | puts/s at 100 per batch | reopen and load |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for policy in policies {
        let dir = base.join(format!("mqttx-commit-timing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let journal = FjallJournal::open(&dir, policy)?;
        let open = started.elapsed();
        let mut seq = 0u64;
        let mut batch = |n: usize| -> Vec<JournalOp> {
            (0..n)
                .map(|_| {
                    seq += 1;
                    JournalOp::Put {
                        table: Table::Messages,
                        key: format!("client-{:04}/{seq:016x}", seq % 100).into_bytes(),
                        value: vec![0x5a; 64],
                    }
                })
                .collect()
        };
        let mut time = |size: usize, rounds: u32| -> Result<Duration, std::io::Error> {
            let batches: Vec<Vec<JournalOp>> = (0..rounds).map(|_| batch(size)).collect();
            let started = Instant::now();
            for ops in &batches {
                journal.commit(ops)?;
            }
            Ok(started.elapsed() / rounds)
        };
        // Warm up, then measure.
        time(1, 20)?;
        let one = time(1, 200)?;
        let hundred = time(100, 200)?;
        drop(journal);
        let started = Instant::now();
        let entries = FjallJournal::open(&dir, policy)?.load()?.len();
        let reopen = started.elapsed();
        println!(
            "| {policy} | {open:.2?} | {one:.2?} | {hundred:.2?} | {:.0} | {reopen:.2?} ({entries} entries) |",
            100.0 / hundred.as_secs_f64()
        );
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
