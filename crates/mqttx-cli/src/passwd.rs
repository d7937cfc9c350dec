//! `mqttx passwd FILE USER`: adds, changes or deletes a user in a password file.
//!
//! The file is in Mosquitto's `password_file` format, so Mosquitto reads the `$7$`
//! (PBKDF2-SHA512) entries written here and `mosquitto_passwd` files work with `mqttx
//! broker` unchanged. `--scram` writes a SCRAM-SHA-256 verifier instead (usable for plain
//! passwords and for SCRAM-SHA-256 enhanced authentication; Mosquitto does not read it).
//! The password is read without echo from the terminal (asked twice), or as one line from
//! standard input with `--password-stdin`. The file is replaced atomically and, on Unix,
//! readable by its owner only.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mqttx_auth::password::{DEFAULT_ITERATIONS, DEFAULT_SCRAM_ITERATIONS, MAX_ITERATIONS};
use mqttx_auth::{PasswordFile, PasswordHash, ScramCredentials};

/// Arguments of `mqttx passwd`.
#[derive(Debug, clap::Args)]
pub(crate) struct PasswdArgs {
    /// The password file (created if missing).
    file: PathBuf,
    /// The user name.
    user: String,
    /// Delete the user instead.
    #[arg(short = 'D', long)]
    delete: bool,
    /// Store a SCRAM-SHA-256 verifier (enables SCRAM enhanced authentication for the user).
    #[arg(long, conflicts_with = "delete")]
    scram: bool,
    /// PBKDF2 iterations [default: 210000, or 600000 with --scram].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ITERATIONS)))]
    iterations: Option<u32>,
    /// Read the password as one line from standard input instead of the terminal.
    #[arg(long, conflicts_with = "delete")]
    password_stdin: bool,
}

pub(crate) fn run(args: &PasswdArgs) -> ExitCode {
    match update(args) {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mqttx passwd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn update(args: &PasswdArgs) -> Result<String, String> {
    if args.user.is_empty() || args.user.contains(':') {
        return Err("a user name must be non-empty and must not contain ':'".into());
    }
    let mut file = match std::fs::read_to_string(&args.file) {
        Ok(text) => {
            PasswordFile::parse(&text).map_err(|e| format!("{}: {e}", args.file.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.delete => PasswordFile::new(),
        Err(e) => return Err(format!("{}: {e}", args.file.display())),
    };
    let message = if args.delete {
        if !file.remove(&args.user) {
            return Err(format!(
                "no user `{}` in {}",
                args.user,
                args.file.display()
            ));
        }
        format!("deleted user `{}`", args.user)
    } else {
        let password = read_password(args.password_stdin)?;
        let existed = file.hash(&args.user).is_some();
        let hash = if args.scram {
            let iterations = args.iterations.unwrap_or(DEFAULT_SCRAM_ITERATIONS);
            PasswordHash::Scram(
                ScramCredentials::new(&password, iterations).map_err(|e| e.to_string())?,
            )
        } else {
            let iterations = args.iterations.unwrap_or(DEFAULT_ITERATIONS);
            PasswordHash::pbkdf2(&password, iterations).map_err(|e| e.to_string())?
        };
        file.insert(&args.user, hash);
        let verb = if existed { "changed" } else { "added" };
        format!("{verb} user `{}`", args.user)
    };
    write_atomically(&args.file, &file.to_string())
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    Ok(message)
}

fn read_password(from_stdin: bool) -> Result<Vec<u8>, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ").map_err(|e| {
            format!("reading the password from the terminal: {e} (use --password-stdin)")
        })?;
        let second = rpassword::prompt_password("Reenter password: ")
            .map_err(|e| format!("reading the password from the terminal: {e}"))?;
        if first != second {
            return Err("the passwords do not match".into());
        }
        first
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(password.into_bytes())
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
