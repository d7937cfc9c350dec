//! Password files: one `user:hash` line per user, in Mosquitto's `password_file` format.
//!
//! Three hash forms are read:
//!
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 (what `mosquitto_passwd` writes by
//!   default, with 101 iterations; [`PasswordFile::set`] writes it with
//!   [`DEFAULT_ITERATIONS`]). SALT and HASH are standard base64.
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt (Mosquitto's older form,
//!   `mosquitto_passwd -H sha512`). Read so that old files keep working; never written.
//! - `$scram-sha-256$ITERATIONS$SALT$STORED_KEY$SERVER_KEY`: a SCRAM-SHA-256 verifier (RFC
//!   5802 §3, RFC 7677), written by [`PasswordFile::set_scram`]. It serves both a plain
//!   CONNECT password and the `SCRAM-SHA-256` enhanced authentication method; Mosquitto does
//!   not read it.
//!
//! Blank lines and lines starting with `#` are ignored and kept when the file is written
//! back. Verification takes constant time in the compared bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256, Sha512};

use crate::scram::ScramCredentials;

/// PBKDF2 iterations [`PasswordFile::set`] uses for `$7$` entries: OWASP's 2023 figure for
/// PBKDF2-HMAC-SHA512. A check costs about 0.1 s of one core; the broker runs it off its
/// connection tasks.
pub const DEFAULT_ITERATIONS: u32 = 210_000;

/// PBKDF2 iterations [`PasswordFile::set_scram`] uses (OWASP's figure for SHA-256). The
/// client repeats this work at each SCRAM exchange.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 600_000;

/// The most PBKDF2 iterations accepted from a file, so that a hostile or corrupt entry cannot
/// make one check take minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// One user's stored secret.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// PBKDF2 iterations.
        iterations: u32,
        /// The salt.
        salt: Vec<u8>,
        /// The 64-byte derived key.
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        /// The salt.
        salt: Vec<u8>,
        /// The 64-byte digest.
        hash: Vec<u8>,
    },
    /// `$scram-sha-256$`: a SCRAM-SHA-256 verifier.
    Scram(ScramCredentials),
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        let kind = match self {
            Self::Pbkdf2Sha512 { .. } => "Pbkdf2Sha512",
            Self::Sha512 { .. } => "Sha512",
            Self::Scram(_) => "Scram",
        };
        f.debug_tuple("PasswordHash").field(&kind).finish()
    }
}

impl PasswordHash {
    /// A `$7$` hash of `password` with a fresh random salt.
    pub fn pbkdf2(password: &[u8], iterations: u32) -> Result<Self, PasswordError> {
        let salt = random_bytes::<12>()?.to_vec();
        let mut hash = vec![0; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        Ok(Self::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether `password` matches.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                constant_time_eq(&out, hash)
            }
            Self::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                constant_time_eq(&digest.finalize(), hash)
            }
            Self::Scram(credentials) => credentials.verify_password(password),
        }
    }

    /// Parses the part after `user:`.
    pub fn parse(text: &str) -> Result<Self, PasswordError> {
        let fields: Vec<&str> = text.split('$').collect();
        let b64 = |s: &str| B64.decode(s).map_err(|_| PasswordError::Base64);
        let iterations = |s: &str| match s.parse::<u32>() {
            Ok(n) if (1..=MAX_ITERATIONS).contains(&n) => Ok(n),
            _ => Err(PasswordError::Iterations),
        };
        match fields[..] {
            ["", "7", it, salt, hash] => {
                let iterations = iterations(it)?;
                let salt = b64(salt)?;
                let hash = b64(hash)?;
                if hash.len() != 64 {
                    return Err(PasswordError::Length);
                }
                Ok(Self::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                })
            }
            ["", "6", salt, hash] => {
                let hash = b64(hash)?;
                if hash.len() != 64 {
                    return Err(PasswordError::Length);
                }
                Ok(Self::Sha512 {
                    salt: b64(salt)?,
                    hash,
                })
            }
            ["", "scram-sha-256", it, salt, stored, server] => {
                let (stored, server) = (b64(stored)?, b64(server)?);
                let (Ok(stored_key), Ok(server_key)) = (stored.try_into(), server.try_into())
                else {
                    return Err(PasswordError::Length);
                };
                Ok(Self::Scram(ScramCredentials {
                    iterations: iterations(it)?,
                    salt: b64(salt)?,
                    stored_key,
                    server_key,
                }))
            }
            _ => Err(PasswordError::UnknownFormat),
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The stored form, as it appears after `user:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
            Self::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            Self::Scram(c) => write!(
                f,
                "$scram-sha-256${}${}${}${}",
                c.iterations,
                B64.encode(&c.salt),
                B64.encode(c.stored_key),
                B64.encode(c.server_key)
            ),
        }
    }
}

/// Why a password file or entry could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordError {
    /// The hash is none of `$7$`, `$6$`, `$scram-sha-256$` (plain-text passwords are not
    /// accepted: hash them with `mqttx passwd` or `mosquitto_passwd -U`).
    UnknownFormat,
    /// A salt or hash is not valid base64.
    Base64,
    /// A hash or key has the wrong length.
    Length,
    /// The iteration count is not a number from 1 to [`MAX_ITERATIONS`].
    Iterations,
    /// A line has no `:` or an empty user name.
    Syntax,
    /// The same user appears twice.
    Duplicate(String),
    /// The operating system's random number generator failed.
    Random,
    /// A line of a file, with its 1-based number.
    Line(usize, Box<PasswordError>),
}

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFormat => f.write_str(
                "unknown password hash (expected $7$, $6$ or $scram-sha-256$; plain-text \
                 passwords must be hashed with `mqttx passwd`)",
            ),
            Self::Base64 => f.write_str("salt or hash is not valid base64"),
            Self::Length => f.write_str("hash has the wrong length"),
            Self::Iterations => write!(f, "iterations must be a number from 1 to {MAX_ITERATIONS}"),
            Self::Syntax => f.write_str("expected `user:hash`"),
            Self::Duplicate(user) => write!(f, "user `{user}` appears twice"),
            Self::Random => f.write_str("the system random number generator failed"),
            Self::Line(n, e) => write!(f, "line {n}: {e}"),
        }
    }
}

impl std::error::Error for PasswordError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    /// A comment or blank line, kept as it is.
    Other(String),
    User(String, PasswordHash),
}

/// A password file in memory: parse it, check passwords, change it, write it back.
///
/// ```
/// use mqttx_auth::PasswordFile;
///
/// // A line written by `mosquitto_passwd` (PBKDF2-SHA512, 101 iterations): password "secret".
/// let file = PasswordFile::parse(
///     "alice:$7$101$KJj3vm6JA0xxlV8p$VZaiBTuiIuJrpfgboGXP+RSMfmwfeUueXQaVP1N5IFrpF/Z4z/hGP8/5xYcKTagZ97cYhx4h23FgBW8kTtH9CA==\n",
/// )?;
/// assert!(file.verify("alice", b"secret"));
/// assert!(!file.verify("alice", b"guess"));
/// assert!(!file.verify("mallory", b"secret"));
/// # Ok::<(), mqttx_auth::PasswordError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordFile {
    lines: Vec<Line>,
}

impl PasswordFile {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a file's text. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, PasswordError> {
        let mut file = Self::new();
        for (i, raw) in text.lines().enumerate() {
            let at = |e| PasswordError::Line(i + 1, Box::new(e));
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                file.lines.push(Line::Other(line.to_owned()));
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(at(PasswordError::Syntax));
            };
            if user.is_empty() {
                return Err(at(PasswordError::Syntax));
            }
            if file.hash(user).is_some() {
                return Err(at(PasswordError::Duplicate(user.to_owned())));
            }
            let hash = PasswordHash::parse(hash.trim()).map_err(at)?;
            file.lines.push(Line::User(user.to_owned(), hash));
        }
        Ok(file)
    }

    /// The stored hash of `user`.
    pub fn hash(&self, user: &str) -> Option<&PasswordHash> {
        self.lines.iter().find_map(|line| match line {
            Line::User(u, hash) if u == user => Some(hash),
            _ => None,
        })
    }

    /// The users, in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|line| match line {
            Line::User(u, _) => Some(u.as_str()),
            Line::Other(_) => None,
        })
    }

    /// Whether `user` exists and `password` is theirs. Unknown users cost as much as known
    /// ones is *not* promised: the user list is not a secret this protects.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.hash(user).is_some_and(|hash| hash.verify(password))
    }

    /// Adds `user` or replaces their hash.
    pub fn insert(&mut self, user: &str, hash: PasswordHash) {
        for line in &mut self.lines {
            if let Line::User(u, h) = line {
                if u == user {
                    *h = hash;
                    return;
                }
            }
        }
        self.lines.push(Line::User(user.to_owned(), hash));
    }

    /// Sets `user`'s password as a `$7$` PBKDF2-SHA512 hash with [`DEFAULT_ITERATIONS`]
    /// (readable by Mosquitto too).
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), PasswordError> {
        let hash = PasswordHash::pbkdf2(password, DEFAULT_ITERATIONS)?;
        self.insert(user, hash);
        Ok(())
    }

    /// Sets `user`'s password as a SCRAM-SHA-256 verifier with
    /// [`DEFAULT_SCRAM_ITERATIONS`]: usable for both plain CONNECT passwords and SCRAM.
    pub fn set_scram(&mut self, user: &str, password: &[u8]) -> Result<(), PasswordError> {
        let credentials = ScramCredentials::new(password, DEFAULT_SCRAM_ITERATIONS)?;
        self.insert(user, PasswordHash::Scram(credentials));
        Ok(())
    }

    /// Removes `user`. Returns whether they existed.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|line| !matches!(line, Line::User(u, _) if u == user));
        self.lines.len() != before
    }
}

impl fmt::Display for PasswordFile {
    /// The file's text, one line per entry, comments kept.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            match line {
                Line::Other(text) => writeln!(f, "{text}")?,
                Line::User(user, hash) => writeln!(f, "{user}:{hash}")?,
            }
        }
        Ok(())
    }
}

/// `N` bytes from the operating system's random number generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], PasswordError> {
    let mut out = [0; N];
    getrandom::fill(&mut out).map_err(|_| PasswordError::Random)?;
    Ok(out)
}

/// Compares in time that depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -c -b pw.txt alice secret` (Mosquitto 2.0, Debian 12).
    const MOSQUITTO_7: &str = "alice:$7$101$KJj3vm6JA0xxlV8p$VZaiBTuiIuJrpfgboGXP+RSMfmwfeUueXQaVP1N5IFrpF/Z4z/hGP8/5xYcKTagZ97cYhx4h23FgBW8kTtH9CA==";
    /// Written by `mosquitto_passwd -H sha512 -b pw.txt bob pw2`.
    const MOSQUITTO_6: &str = "bob:$6$IjgkvUrWR5aBfRbL$p3zA8bA/3Hg6MN6cC0beHeq+6bxST0VQZTUw38wFm5Oy6MLEzEEmcVg3/Dq1GS1XL0G6s13/JH5QUbHW4YDoRA==";

    #[test]
    fn reads_mosquitto_entries() {
        let file = PasswordFile::parse(&format!("# users\n{MOSQUITTO_7}\n\n{MOSQUITTO_6}\n"))
            .expect("parse");
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"secreT"));
        assert!(file.verify("bob", b"pw2"));
        assert!(!file.verify("bob", b"secret"));
        assert_eq!(file.users().collect::<Vec<_>>(), ["alice", "bob"]);
        // Written back unchanged, comments and blank lines included.
        assert_eq!(
            file.to_string(),
            format!("# users\n{MOSQUITTO_7}\n\n{MOSQUITTO_6}\n")
        );
    }

    #[test]
    fn set_change_remove_round_trip() {
        let mut file = PasswordFile::new();
        // Few iterations keep the test fast; `set` uses DEFAULT_ITERATIONS.
        file.insert("carol", PasswordHash::pbkdf2(b"one", 1000).expect("hash"));
        file.insert(
            "dave",
            PasswordHash::Scram(ScramCredentials::new(b"two", 1000).expect("scram")),
        );
        let again = PasswordFile::parse(&file.to_string()).expect("parse");
        assert_eq!(again, file);
        assert!(again.verify("carol", b"one"));
        assert!(again.verify("dave", b"two"));
        assert!(!again.verify("dave", b"one"));
        file.insert("carol", PasswordHash::pbkdf2(b"new", 1000).expect("hash"));
        assert!(file.verify("carol", b"new") && !file.verify("carol", b"one"));
        assert!(file.remove("carol"));
        assert!(!file.remove("carol"));
        assert!(!file.verify("carol", b"new"));
    }

    #[test]
    fn bad_lines_are_named() {
        let check = |text: &str, expected: PasswordError| {
            assert_eq!(PasswordFile::parse(text), Err(expected), "{text:?}");
        };
        let line = |n, e| PasswordError::Line(n, Box::new(e));
        check("alice", line(1, PasswordError::Syntax));
        check(":$6$AA==$AA==", line(1, PasswordError::Syntax));
        check("# c\nalice:plain", line(2, PasswordError::UnknownFormat));
        check("a:$7$0$AAAA$AAAA", line(1, PasswordError::Iterations));
        check(
            "a:$7$99999999999$AAAA$AAAA",
            line(1, PasswordError::Iterations),
        );
        check("a:$7$101$!!$AAAA", line(1, PasswordError::Base64));
        check("a:$7$101$AAAA$AAAA", line(1, PasswordError::Length));
        check(
            &format!("{MOSQUITTO_7}\n{MOSQUITTO_7}"),
            line(2, PasswordError::Duplicate("alice".into())),
        );
    }

    #[test]
    fn debug_hides_key_material() {
        let hash =
            PasswordHash::parse(MOSQUITTO_7.split_once(':').expect("entry").1).expect("parse");
        assert_eq!(format!("{hash:?}"), "PasswordHash(\"Pbkdf2Sha512\")");
    }
}
