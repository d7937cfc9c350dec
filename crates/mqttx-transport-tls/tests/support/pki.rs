//! A test PKI made with rcgen at test time: a CA, a server certificate for `localhost` and
//! 127.0.0.1, a client certificate (CN `device-1`) for mutual TLS, and an unrelated CA, all
//! written as PEM files into a fresh directory under the system's temporary directory.
//!
//! Shared by the tests of several crates through `#[path]`.

#![allow(dead_code, unreachable_pub)] // Each test crate uses a different subset.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files of one test PKI.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate that signed the server and client certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: verifying with it fails (unknown issuer).
    pub other_ca: PathBuf,
    /// A server certificate for `localhost` whose validity ended in 2020.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn leaf(names: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![eku];
    params
}

/// Makes a PKI in a new directory (removed when the value is dropped).
pub fn make() -> Pki {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mqttx-pki-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("PKI directory");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    };

    let ca_key = KeyPair::generate().expect("CA key");
    let ca_def = ca_params("mqttx test CA");
    let ca_cert = ca_def.self_signed(&ca_key).expect("CA cert");
    let ca = write("ca.pem", ca_cert.pem());
    let issuer = Issuer::new(ca_def, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let server_cert = leaf(
        &["localhost", "127.0.0.1"],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    )
    .signed_by(&server_key, &issuer)
    .expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let client_cert = leaf(
        &["device-1.example"],
        "device-1",
        ExtendedKeyUsagePurpose::ClientAuth,
    )
    .signed_by(&client_key, &issuer)
    .expect("client cert");

    let expired_key = KeyPair::generate().expect("expired key");
    let mut expired = leaf(
        &["localhost", "127.0.0.1"],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    expired.not_before = rcgen::date_time_ymd(2019, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let expired_cert = expired
        .signed_by(&expired_key, &issuer)
        .expect("expired cert");

    let other_key = KeyPair::generate().expect("other CA key");
    let other = ca_params("unrelated CA")
        .self_signed(&other_key)
        .expect("other CA cert");

    Pki {
        ca,
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        other_ca: write("other-ca.pem", other.pem()),
        expired_cert: write("expired.pem", expired_cert.pem()),
        expired_key: write("expired.key", expired_key.serialize_pem()),
        dir,
    }
}
