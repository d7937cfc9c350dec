//! `cargo xtask tidy`: the architecture invariants of ARCHITECTURE.md, checked as text.
//!
//! It also runs as a unit test, so `cargo test --workspace` fails when an invariant breaks.

use std::fs;
use std::path::{Path, PathBuf};

/// Words that must not appear in the sans-IO layers (the codec, the router, and `proto` modules).
const FORBIDDEN_IN_PURE_LAYERS: &[&str] = &[
    "tokio",
    "std::net",
    "Instant::now",
    "SystemTime::now",
    "std::thread",
    "std::sync::Mutex",
];

/// Plain address values that a sans-IO layer may carry (e.g. the peer address a shell passes
/// in with a CONNECT): they name an address and do no I/O, unlike the rest of `std::net`.
const VALUE_TYPES_ALLOWED: &[&str] = &["std::net::SocketAddr", "std::net::IpAddr"];

/// Runs every check; returns the list of problems found.
pub(crate) fn run(root: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    check_codec_has_no_dependencies(root, &mut problems);
    for pure in pure_layers(root) {
        for file in rust_files(&pure) {
            check_pure_file(&file, &mut problems);
        }
    }
    for dir in ["crates", "xtask/src", "fuzz/fuzz_targets", "benches"] {
        for file in rust_files(&root.join(dir)) {
            check_any_file(&file, &mut problems);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Directories that must stay sans-IO.
fn pure_layers(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![
        root.join("crates/mqttx-codec/src"),
        root.join("crates/mqttx-router/src"),
    ];
    for krate in ["mqttx-client", "mqttx-broker", "mqttx-cluster-nats"] {
        let src = root.join("crates").join(krate).join("src");
        dirs.push(src.join("proto"));
    }
    dirs.into_iter().filter(|d| d.exists()).collect()
}

fn check_codec_has_no_dependencies(root: &Path, problems: &mut Vec<String>) {
    let path = root.join("crates/mqttx-codec/Cargo.toml");
    let Ok(text) = fs::read_to_string(&path) else {
        problems.push(format!("{}: cannot read", path.display()));
        return;
    };
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            problems.push(format!(
                "{}: mqttx-codec must have an empty [dependencies], found `{line}`",
                path.display()
            ));
        }
    }
}

fn check_pure_file(path: &Path, problems: &mut Vec<String>) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    for (n, line) in text.lines().enumerate() {
        let mut code = line.split("//").next().unwrap_or("").to_owned();
        for allowed in VALUE_TYPES_ALLOWED {
            code = code.replace(allowed, "");
        }
        for word in FORBIDDEN_IN_PURE_LAYERS {
            if code.contains(word) {
                problems.push(format!(
                    "{}:{}: `{word}` in a sans-IO layer (see ARCHITECTURE.md invariants)",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
}

fn check_any_file(path: &Path, problems: &mut Vec<String>) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    if !text.starts_with("//!") {
        problems.push(format!(
            "{}: must start with a `//!` doc comment",
            path.display()
        ));
    }
    let needle = concat!("#[should", "_panic");
    if text.contains(needle) {
        problems.push(format!(
            "{}: assert the error instead of should_panic",
            path.display()
        ));
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        let root = super::super::root();
        if let Err(problems) = super::run(&root) {
            panic!("tidy found problems:\n{}", problems.join("\n"));
        }
    }
}
