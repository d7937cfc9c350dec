//! `cargo xtask`: the project's automation, written in Rust so it runs wherever cargo does.
//!
//! ```text
//! cargo xtask ci                      fmt check, clippy -D warnings, tests (what .ci/run does)
//! cargo xtask tidy                    layering checks (also run as a #[test])
//! cargo xtask fuzz [TARGET] [--secs N]  build the fuzz targets, run each (or TARGET) for N s (default 10)
//! cargo xtask bench                   run the criterion benches
//! cargo xtask bench-broker [--runs N] [--mqtt 3|5] [--only TEXT] [--cluster]
//!                                     Mosquitto and `mqttx broker` side by side (`mqttx bench`)
//! ```

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench_broker;
mod tidy;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy::run(&root()).map_err(|problems| problems.join("\n")),
        Some("fuzz") => fuzz(&args[1..]),
        Some("bench") => run(cargo().args(["bench", "--package", "mqttx-benches"])),
        Some("bench-broker") => bench_broker::run(&root(), cargo(), &args[1..]),
        _ => Err(String::from(
            "usage: cargo xtask <ci | tidy | fuzz [TARGET] [--secs N] | bench | bench-broker [--runs N] [--mqtt 3|5] [--only TEXT] [--cluster]>",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, found from this crate's manifest directory.
fn root() -> PathBuf {
    let manifest =
        env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("xtask"), PathBuf::from);
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn ci() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    tidy::run(&root()).map_err(|problems| problems.join("\n"))?;
    run(cargo().args(["test", "--workspace"]))
}

/// Every fuzz target under `fuzz/fuzz_targets`, by file stem.
fn fuzz_targets() -> Result<Vec<String>, String> {
    let dir = root().join("fuzz").join("fuzz_targets");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    Ok(names)
}

fn fuzz(args: &[String]) -> Result<(), String> {
    let mut secs: u64 = 10;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--secs" {
            let value = it.next().ok_or("--secs needs a number")?;
            secs = value
                .parse()
                .map_err(|_| format!("--secs: not a number: {value}"))?;
        } else if only.is_none() {
            only = Some(arg.clone());
        } else {
            return Err(format!("unexpected argument {arg}"));
        }
    }
    let all = fuzz_targets()?;
    let targets: Vec<String> = match only {
        Some(name) if all.contains(&name) => vec![name],
        Some(name) => return Err(format!("no fuzz target {name}; have {}", all.join(", "))),
        None => all,
    };
    let fuzz_dir = root().join("fuzz");
    run(Command::new("cargo").current_dir(&fuzz_dir).args([
        "+nightly",
        "fuzz",
        "build",
        "--release",
    ]))?;
    for target in &targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        run(Command::new("cargo").current_dir(&fuzz_dir).args([
            "+nightly",
            "fuzz",
            "run",
            "--release",
            target,
            "--",
            &format!("-max_total_time={secs}"),
            "-print_final_stats=1",
        ]))?;
    }
    Ok(())
}
