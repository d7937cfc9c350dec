//! `mqttx passwd` and `mqttx broker` with a `[security]` table, driven as a user would:
//! the `mqttx` binary, `mosquitto_passwd` adding to the same file, and `mosquitto_pub` /
//! `mosquitto_sub` as clients. Every process is started here, waited for with a timeout and
//! ended by its pid (`kill_on_drop`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(20);

fn mqttx() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqttx"));
    cmd.kill_on_drop(true);
    cmd
}

/// A directory for this test's files, removed afterwards.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mqttx-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn status(mut cmd: Command) -> std::process::ExitStatus {
    let child = cmd.stdin(Stdio::null()).spawn().expect("spawn");
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("exits in time")
        .expect("wait")
        .status
}

/// `mqttx passwd --password-stdin` with few iterations (a test need not be slow).
async fn passwd(file: &Path, user: &str, password: &str) {
    let mut child = mqttx()
        .args(["passwd", "--password-stdin", "--iterations", "1000"])
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mqttx passwd");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .expect("write password");
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("in time")
        .expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `mqttx broker` and its log.
struct BrokerProcess {
    child: Child,
    log: Lines<BufReader<ChildStderr>>,
    port: u16,
}

impl BrokerProcess {
    async fn start(config: &Path) -> Self {
        let mut child = mqttx()
            .args(["broker", "--memory", "--bind", "127.0.0.1:0", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mqttx broker");
        let log = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut broker = Self {
            child,
            log,
            port: 0,
        };
        let line = broker.line_containing("mqttx broker listening").await;
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        broker.port = port;
        broker
    }

    async fn line_containing(&mut self, needle: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.log.next_line().await.expect("read log") {
                    Some(line) if line.contains(needle) => return line,
                    Some(_) => {}
                    None => panic!("the broker exited before logging {needle:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the log in time"))
    }

    fn hangup(&self) {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP")
            .success();
        assert!(ok);
    }

    /// A mosquitto client, under `stdbuf -oL` (mosquitto_sub does not flush its lines to a
    /// pipe otherwise).
    fn client(&self, tool: &str, version: &str, auth: Option<(&str, &str)>) -> Command {
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", tool]);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-V",
            version,
        ]);
        if let Some((user, password)) = auth {
            cmd.args(["-u", user, "-P", password]);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    async fn publish(&self, version: &str, auth: Option<(&str, &str)>, message: &str) -> bool {
        let mut cmd = self.client("mosquitto_pub", version, auth);
        cmd.args(["-t", "sec/t", "-q", "1", "-m", message])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        status(cmd).await.success()
    }
}

/// The next line of `out` containing `needle`, within the wait.
async fn next_line(out: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match out.next_line().await.expect("read") {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("mosquitto_sub exited before printing {needle:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in time"))
}

fn write_config(path: &Path, passwords: &Path, allow_anonymous: bool) {
    std::fs::write(
        path,
        format!(
            "[security]\nallow_anonymous = {allow_anonymous}\npassword_file = {:?}\n",
            passwords.display().to_string()
        ),
    )
    .expect("write config");
}

#[tokio::test]
async fn passwords_from_mqttx_passwd_and_mosquitto_passwd_then_reload() {
    let dir = Dir::new("security");
    let passwords = dir.path("passwd");
    // One file, written by both tools: ours adds bob, Mosquitto's adds alice.
    passwd(&passwords, "bob", "builder").await;
    let mut mosquitto_passwd = Command::new("mosquitto_passwd");
    mosquitto_passwd
        .arg("-b")
        .arg(&passwords)
        .args(["alice", "secret"]);
    assert!(
        status(mosquitto_passwd).await.success(),
        "mosquitto_passwd (Debian `mosquitto`)"
    );
    let text = std::fs::read_to_string(&passwords).expect("read");
    assert!(
        text.starts_with("bob:$7$1000$") && text.contains("\nalice:$7$"),
        "{text}"
    );

    let config = dir.path("mqttx.toml");
    write_config(&config, &passwords, true);
    let mut broker = BrokerProcess::start(&config).await;

    // A subscriber connected before the reload (anonymous, allowed for now).
    let mut sub = broker
        .client("mosquitto_sub", "mqttv5", None)
        .args(["-t", "sec/t", "-q", "1", "-d"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto_sub");
    let mut out: Lines<BufReader<ChildStdout>> =
        BufReader::new(sub.stdout.take().expect("stdout")).lines();
    next_line(&mut out, "SUBACK").await;

    for version in ["mqttv311", "mqttv5"] {
        assert!(
            broker
                .publish(version, Some(("bob", "builder")), "bob")
                .await
        );
        assert!(
            broker
                .publish(version, Some(("alice", "secret")), "alice")
                .await
        );
        assert!(
            !broker.publish(version, Some(("bob", "wrong")), "x").await,
            "wrong password"
        );
        assert!(
            !broker.publish(version, Some(("eve", "x")), "x").await,
            "unknown user"
        );
        assert!(
            broker.publish(version, None, "anon").await,
            "anonymous allowed"
        );
    }

    // Anonymous clients are refused after a reload; the subscriber stays connected.
    write_config(&config, &passwords, false);
    broker.hangup();
    broker
        .line_containing("security configuration reloaded")
        .await;
    assert!(
        !broker.publish("mqttv5", None, "x").await,
        "anonymous refused"
    );
    assert!(
        broker
            .publish("mqttv5", Some(("bob", "builder")), "after reload")
            .await
    );
    next_line(&mut out, "after reload").await;

    // A broken file is refused and the rules in force stay.
    std::fs::write(&config, "[security]\nallow_anonymous = maybe\n").expect("write");
    broker.hangup();
    broker.line_containing("reload failed").await;
    assert!(!broker.publish("mqttv5", None, "x").await);
    assert!(
        broker
            .publish("mqttv311", Some(("alice", "secret")), "still")
            .await
    );
    next_line(&mut out, "still").await;
}

#[tokio::test]
async fn passwd_deletes_and_refuses_bad_input() {
    let dir = Dir::new("passwd");
    let file = dir.path("passwd");
    passwd(&file, "carol", "pw").await;
    passwd(&file, "dave", "pw").await;
    let mut delete = mqttx();
    delete.args(["passwd", "-D"]).arg(&file).arg("carol");
    assert!(status(delete).await.success());
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        !text.contains("carol:") && text.starts_with("dave:$7$"),
        "{text}"
    );
    let mut missing = mqttx();
    missing.args(["passwd", "-D"]).arg(&file).arg("carol");
    assert_eq!(status(missing).await.code(), Some(1));
    let mut colon = mqttx();
    colon
        .args(["passwd", "--password-stdin"])
        .arg(&file)
        .arg("a:b");
    assert_eq!(status(colon).await.code(), Some(1));
    // No terminal and no --password-stdin: an error that says what to do, exit 1.
    let mut no_tty = mqttx();
    no_tty.arg("passwd").arg(&file).arg("erin");
    assert_eq!(status(no_tty).await.code(), Some(1));
}
