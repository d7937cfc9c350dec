//! A real nats-server with JetStream for tests: [`NatsServer::start`] runs
//! `nats-server -a 127.0.0.1 -p -1 -js -sd DIR --ports_file_dir DIR` in a fresh temporary
//! directory (a random client port, read back from the ports file), and dropping it kills the
//! server by its pid and waits for it.
//!
//! The binary is `$NATS_SERVER` if set, else `target/nats/bin/nats-server` of the workspace
//! (where `.ci/run` installs it from PyPI), else `nats-server` on the `PATH`. It must be 2.10 or
//! later; when none is found, or it is older, the test fails and says how to install one.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to write its ports file.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the ports file is looked for while the server starts.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The oldest nats-server the cluster supports (async-nats's JetStream API needs 2.10).
const MIN_VERSION: (u32, u32) = (2, 10);

/// How to install a suitable nats-server, for failure messages.
const HOW_TO_INSTALL: &str = "install nats-server 2.10 or later: \
     `python3 -m pip install --no-deps --require-hashes --target target/nats \
     -r .ci/requirements-nats.txt` in the workspace (what .ci/run does), or put one on the \
     PATH, or set NATS_SERVER to its path (Debian's nats-server 2.9 is too old)";

/// A running nats-server, killed when dropped.
#[derive(Debug)]
pub(crate) struct NatsServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a nats-server with JetStream on a random loopback port, or panics saying why
    /// (and how to install nats-server when there is none).
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (child, url) = Self::spawn(dir.path(), "-1");
        Self { child, url, dir }
    }

    /// Kills the server (by its pid) and starts it again on the same port with the same
    /// JetStream directory, as an engine that crashed and came back.
    #[allow(dead_code)]
    pub(crate) fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().expect("a port").to_owned();
        let (child, url) = Self::spawn(self.dir.path(), &port);
        assert_eq!(url, self.url, "restarted on the same port");
        self.child = child;
    }

    /// Starts nats-server in `dir` on `port` (`-1`: a random one) and reads its client URL.
    fn spawn(dir: &Path, port: &str) -> (Child, String) {
        let binary = match locate(std::env::var_os("NATS_SERVER").map(PathBuf::from)) {
            Ok(binary) => binary,
            Err(e) => panic!("{e}"),
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("nats-server.log"))
            .expect("a log file");
        let mut child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {HOW_TO_INSTALL}", binary.display()));
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + START_TIMEOUT;
        let url = loop {
            if let Some(url) = fs::read_to_string(&ports).ok().and_then(|s| client_url(&s)) {
                break url;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not write {} ({}); its log:\n{}",
                    binary.display(),
                    ports.display(),
                    exited.map_or_else(|| "timed out".to_owned(), |s| s.to_string()),
                    log_tail(dir)
                );
            }
            thread::sleep(POLL_INTERVAL);
        };
        (child, url)
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The server's process id, for tests that signal it.
    #[allow(dead_code)]
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the server's log, for failure messages.
    #[allow(dead_code)]
    pub(crate) fn log(&self) -> String {
        log_tail(self.dir.path())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Kills this child by its pid, and reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nats-server to run: `explicit` (from `$NATS_SERVER`) if given, else the workspace's
/// `target/nats/bin/nats-server`, else `nats-server` on the `PATH`; checked to be 2.10 or later.
pub(crate) fn locate(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nats/bin/nats-server");
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path],
        None => vec![installed, PathBuf::from("nats-server")],
    };
    let mut problems = Vec::new();
    for candidate in candidates {
        match version(&candidate) {
            Ok(v) if v >= MIN_VERSION => return Ok(candidate),
            Ok((major, minor)) => problems.push(format!(
                "{} is version {major}.{minor}, older than 2.10",
                candidate.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(format!(
        "no usable nats-server for the JetStream tests ({}); {HOW_TO_INSTALL}",
        problems.join("; ")
    ))
}

/// The major and minor version `binary --version` prints (`nats-server: v2.15.1`).
fn version(binary: &Path) -> Result<(u32, u32), String> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parse = || -> Option<(u32, u32)> {
        let v = text.trim().rsplit(' ').next()?.strip_prefix('v')?;
        let mut parts = v.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    parse().ok_or_else(|| format!("cannot read the version in {:?}", text.trim()))
}

/// The client URL in a ports file (`{"nats":["nats://127.0.0.1:4222"],...}`).
fn client_url(ports: &str) -> Option<String> {
    let rest = &ports[ports.find("\"nats\":[\"")? + 9..];
    let url = &rest[..rest.find('"')?];
    url.starts_with("nats://").then(|| url.to_owned())
}

/// The last 4 KiB of the server's log.
fn log_tail(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(dir.join("nats-server.log")) {
        let _ = file.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(4096);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_owned()
}
