//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), sans-IO, for MQTT 5.0 enhanced
//! authentication (§4.12) with the Authentication Method `SCRAM-SHA-256`.
//!
//! The exchange in MQTT terms: the client's CONNECT carries the client-first message as its
//! Authentication Data; the server answers AUTH 0x18 with the server-first message; the
//! client's AUTH 0x18 carries the client-final message with its proof; the server's CONNACK
//! 0x00 carries the server-final message (`v=` signature), or CONNACK 0x86 ends it. The same
//! exchange runs again, with AUTH 0x19 first, for re-authentication.
//!
//! The server keeps only [`ScramCredentials`] (salt, iterations, StoredKey, ServerKey),
//! never the password. Channel binding is not supported (`n,,` only), and passwords are used
//! as their UTF-8 bytes without SASLprep: clients must send the same bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::password::{PasswordError, constant_time_eq, random_bytes, sha256};

/// The MQTT Authentication Method name.
pub const METHOD: &str = "SCRAM-SHA-256";

/// The longest SCRAM message accepted (a user name, nonces and a proof fit easily).
const MAX_MESSAGE: usize = 4096;

/// What the server stores for one user: RFC 5802 §3's verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// PBKDF2-HMAC-SHA256 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

impl ScramCredentials {
    /// Credentials for `password` with a fresh 16-byte salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<Self, PasswordError> {
        let salt = random_bytes::<16>()?.to_vec();
        Ok(Self::derive(password, salt, iterations))
    }

    fn derive(password: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        Self {
            iterations,
            stored_key: sha256(&hmac(&salted, b"Client Key")),
            server_key: hmac(&salted, b"Server Key"),
            salt,
        }
    }

    /// Whether `password` derives these credentials (for a plain CONNECT password).
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = Self::derive(password, self.salt.clone(), self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }
}

/// Why a SCRAM exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScramError {
    /// A message does not follow RFC 5802's grammar (or is longer than 4 KiB).
    Malformed,
    /// The client asked for channel binding, which is not supported.
    ChannelBinding,
    /// The nonce of the final message is not the one of this exchange.
    Nonce,
    /// Unknown user or wrong password: the proof did not verify. (The server does not say
    /// which; an unknown user gets a server-first message like any other.)
    InvalidProof,
    /// The server's signature did not verify: it does not know the password.
    ServerSignature,
    /// The server reported an error (`e=` in the server-final message).
    ServerError,
    /// The operating system's random number generator failed.
    Random,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed SCRAM message",
            Self::ChannelBinding => "SCRAM channel binding is not supported",
            Self::Nonce => "SCRAM nonce mismatch",
            Self::InvalidProof => "SCRAM proof did not verify (unknown user or wrong password)",
            Self::ServerSignature => "SCRAM server signature did not verify",
            Self::ServerError => "the server refused the SCRAM exchange",
            Self::Random => "the system random number generator failed",
        })
    }
}

impl std::error::Error for ScramError {}

/// The `key=value` attributes of a SCRAM message, in order.
fn attributes(message: &str) -> Result<Vec<(char, &str)>, ScramError> {
    message
        .split(',')
        .map(|attr| {
            let mut chars = attr.chars();
            match (chars.next(), chars.next()) {
                (Some(key), Some('=')) if key.is_ascii_alphabetic() => Ok((key, &attr[2..])),
                _ => Err(ScramError::Malformed),
            }
        })
        .collect()
}

fn text(bytes: &[u8]) -> Result<&str, ScramError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ScramError::Malformed);
    }
    std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed)
}

/// A printable nonce: 24 random bytes in base64 (no `,`).
fn nonce() -> Result<String, ScramError> {
    let bytes = random_bytes::<24>().map_err(|_| ScramError::Random)?;
    Ok(B64.encode(bytes))
}

/// RFC 5802 §5.1 `saslname`: `=2C` for `,` and `=3D` for `=`.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find(['=', ',']) {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// The server side of one exchange, between the server-first and the client-final message.
///
/// ```
/// use mqttx_auth::scram::{ScramClient, ScramCredentials, ScramServer};
///
/// let stored = ScramCredentials::new(b"pencil", 4096)?;
/// let client = ScramClient::new("user", "pencil")?;
/// let (server, server_first) = ScramServer::start(&client.client_first(), |user| {
///     (user == "user").then(|| stored.clone())
/// })?;
/// let (client_final, expected) = client.client_final(&server_first)?;
/// let (user, server_final) = server.finish(&client_final)?;
/// assert_eq!(user, "user");
/// ScramClient::verify_server_final(&server_final, &expected)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ScramServer {
    user: String,
    /// `None` for an unknown user: the exchange continues with made-up parameters and fails
    /// at the proof, so the server does not tell which users exist.
    credentials: Option<ScramCredentials>,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl ScramServer {
    /// Reads the client-first message and answers with the server-first message. `lookup`
    /// gives the user's credentials.
    pub fn start(
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredentials>,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let message = text(client_first)?;
        // gs2-header: "n,," (no channel binding, no authzid); "y,," and "p=" are refused.
        let bare = match message.strip_prefix("n,") {
            Some(rest) => rest
                .strip_prefix(',')
                .or_else(|| {
                    rest.strip_prefix("a=")
                        .and_then(|r| r.split_once(',').map(|x| x.1))
                })
                .ok_or(ScramError::Malformed)?,
            None if message.starts_with("y,") || message.starts_with("p=") => {
                return Err(ScramError::ChannelBinding);
            }
            None => return Err(ScramError::Malformed),
        };
        let attrs = attributes(bare)?;
        let (user, client_nonce) = match attrs[..] {
            [('n', user), ('r', nonce), ..] if !nonce.is_empty() => (decode_saslname(user)?, nonce),
            _ => return Err(ScramError::Malformed),
        };
        if client_nonce.contains(|c: char| !c.is_ascii_graphic() || c == ',') {
            return Err(ScramError::Malformed);
        }
        let credentials = lookup(&user);
        let (salt, iterations) = match &credentials {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                random_bytes::<16>()
                    .map_err(|_| ScramError::Random)?
                    .to_vec(),
                crate::password::DEFAULT_SCRAM_ITERATIONS,
            ),
        };
        let nonce = format!("{client_nonce}{}", nonce()?);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let out = server_first.clone().into_bytes();
        Ok((
            Self {
                user,
                credentials,
                nonce,
                client_first_bare: bare.to_owned(),
                server_first,
            },
            out,
        ))
    }

    /// The user name the client gave.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client-final message; on success returns the user name and the
    /// server-final message (`v=` signature) for the CONNACK or AUTH 0x00.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let message = text(client_final)?;
        let (without_proof, proof) = message.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let attrs = attributes(without_proof)?;
        let nonce = match attrs[..] {
            [('c', binding), ('r', nonce), ..] if binding == B64.encode("n,,") => nonce,
            [('c', _), ('r', _), ..] => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed),
        };
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed)?;
        let Some(credentials) = self.credentials else {
            return Err(ScramError::InvalidProof);
        };
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&credentials.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&sha256(&client_key), &credentials.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&credentials.server_key, auth_message.as_bytes());
        Ok((
            self.user,
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

/// The client side: the client-first message, then the client-final message for the
/// server's challenge.
pub struct ScramClient {
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client for `user` with `password`, with a fresh nonce.
    pub fn new(user: &str, password: impl Into<Vec<u8>>) -> Result<Self, ScramError> {
        let nonce = nonce()?;
        Ok(Self {
            password: password.into(),
            client_first_bare: format!("n={},r={nonce}", encode_saslname(user)),
            nonce,
        })
    }

    /// The client-first message: the CONNECT's (or AUTH 0x19's) Authentication Data.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message for the server-first message, and the server signature
    /// to expect in the server-final message.
    pub fn client_final(&self, server_first: &[u8]) -> Result<(Vec<u8>, [u8; 32]), ScramError> {
        let message = text(server_first)?;
        let attrs = attributes(message)?;
        let (nonce, salt, iterations) = match attrs[..] {
            [('r', nonce), ('s', salt), ('i', iterations), ..] => (nonce, salt, iterations),
            [('e', _), ..] => return Err(ScramError::ServerError),
            _ => return Err(ScramError::Malformed),
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = B64.decode(salt).map_err(|_| ScramError::Malformed)?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|n| (1..=crate::password::MAX_ITERATIONS).contains(n))
            .ok_or(ScramError::Malformed)?;
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{message},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        let expected = hmac(&server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
            expected,
        ))
    }

    /// Checks the server-final message against the signature [`client_final`](Self::client_final)
    /// returned: only a server that knows the credentials can produce it.
    pub fn verify_server_final(server_final: &[u8], expected: &[u8; 32]) -> Result<(), ScramError> {
        let message = text(server_final)?;
        match attributes(message)?[..] {
            [('v', signature), ..] => {
                let signature = B64.decode(signature).map_err(|_| ScramError::Malformed)?;
                if constant_time_eq(&signature, expected) {
                    Ok(())
                } else {
                    Err(ScramError::ServerSignature)
                }
            }
            [('e', _), ..] => Err(ScramError::ServerError),
            _ => Err(ScramError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example: user "user", password "pencil", with its nonces and salt.
    #[test]
    fn rfc7677_example() {
        let credentials = ScramCredentials::derive(
            b"pencil",
            B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt"),
            4096,
        );
        let client = ScramClient {
            password: b"pencil".to_vec(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
        };
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, expected) = client.client_final(server_first).expect("final");
        assert_eq!(
            String::from_utf8(client_final.clone()).expect("utf-8"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server = ScramServer {
            user: "user".into(),
            credentials: Some(credentials),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: String::from_utf8(server_first.to_vec()).expect("utf-8"),
        };
        let (user, server_final) = server.finish(&client_final).expect("verified");
        assert_eq!(user, "user");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        ScramClient::verify_server_final(&server_final, &expected).expect("server verified");
    }

    fn exchange(password: &str, stored: &ScramCredentials) -> Result<String, ScramError> {
        let client = ScramClient::new("al,i=ce", password)?;
        let (server, first) = ScramServer::start(&client.client_first(), |u| {
            (u == "al,i=ce").then(|| stored.clone())
        })?;
        let (last, expected) = client.client_final(&first)?;
        let (user, server_final) = server.finish(&last)?;
        ScramClient::verify_server_final(&server_final, &expected)?;
        Ok(user)
    }

    #[test]
    fn right_and_wrong_passwords() {
        let stored = ScramCredentials::new(b"right", 1000).expect("credentials");
        assert_eq!(exchange("right", &stored), Ok("al,i=ce".into()));
        assert_eq!(exchange("wrong", &stored), Err(ScramError::InvalidProof));
        assert!(stored.verify_password(b"right") && !stored.verify_password(b"wrong"));
    }

    #[test]
    fn unknown_user_fails_only_at_the_proof() {
        let client = ScramClient::new("nobody", "x").expect("client");
        let (server, first) =
            ScramServer::start(&client.client_first(), |_| None).expect("a challenge anyway");
        let (last, _) = client.client_final(&first).expect("final");
        assert_eq!(server.finish(&last), Err(ScramError::InvalidProof));
    }

    #[test]
    fn hostile_messages_are_errors() {
        let stored = ScramCredentials::new(b"pw", 1000).expect("credentials");
        let lookup = |_: &str| Some(stored.clone());
        for first in [
            &b""[..],
            b"n,,",
            b"n,,r=abc",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"x,,n=user,r=abc",
            b"n,,n=us=ZZer,r=abc",
            b"n,,n=user,r=a\xffb",
            &[b'a'; 5000],
        ] {
            assert_eq!(
                ScramServer::start(first, lookup).map(|_| ()),
                Err(ScramError::Malformed),
                "{first:?}"
            );
        }
        assert_eq!(
            ScramServer::start(b"y,,n=user,r=abc", lookup).map(|_| ()),
            Err(ScramError::ChannelBinding)
        );
        let client = ScramClient::new("user", "pw").expect("client");
        let (server, _) = ScramServer::start(&client.client_first(), lookup).expect("start");
        assert_eq!(
            server.finish(b"c=biws,r=other,p=AAAA").map(|_| ()),
            Err(ScramError::Nonce)
        );
        let (server, first) = ScramServer::start(&client.client_first(), lookup).expect("start");
        let (last, _) = client.client_final(&first).expect("final");
        let truncated = &last[..last.len() - 4];
        assert_eq!(
            server.finish(truncated).map(|_| ()),
            Err(ScramError::Malformed)
        );
        // A server that does not extend the client's nonce is refused by the client.
        assert_eq!(
            client.client_final(b"r=zzz,s=AAAA,i=4096").map(|_| ()),
            Err(ScramError::Nonce)
        );
    }
}
