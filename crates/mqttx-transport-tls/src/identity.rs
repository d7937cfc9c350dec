//! [`PeerIdentity`]: who a verified certificate names, read from its DER bytes.
//!
//! A small DER walker reads only what the identity needs: the subject's Common Name and the
//! Subject Alternative Name extension. Every read is bounds-checked and a malformed
//! certificate gives an identity with fewer names, never a panic.

use std::net::IpAddr;

/// The identity of a TLS peer, taken from the end-entity certificate it presented and that
/// was verified against the configured CA (mutual TLS on a server, the server's certificate
/// on a client).
///
/// ```
/// let id = mqttx_transport_tls::PeerIdentity::default();
/// assert_eq!(id.common_name, None);
/// assert!(id.subject_alt_names.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The subject's Common Name (OID 2.5.4.3), when it has one.
    pub common_name: Option<String>,
    /// The Subject Alternative Names, each with its kind as OpenSSL prints them:
    /// `DNS:host.example`, `IP:192.0.2.1`, `email:user@example.org`, `URI:spiffe://…`.
    pub subject_alt_names: Vec<String>,
    /// The certificate itself (DER), for checks this type does not make.
    pub certificate: Vec<u8>,
}

impl PeerIdentity {
    /// Reads the identity of a DER certificate.
    ///
    /// The certificate is expected to have been verified already; parts that cannot be read
    /// are left out.
    pub fn from_der(der: &[u8]) -> Self {
        let mut id = Self {
            certificate: der.to_vec(),
            ..Self::default()
        };
        // A malformed certificate simply yields fewer names.
        let _ = id.read(der);
        id
    }

    /// The first name usable as an MQTT identity: the Common Name, else the first SAN
    /// without its kind prefix.
    pub fn name(&self) -> Option<&str> {
        self.common_name.as_deref().or_else(|| {
            self.subject_alt_names
                .first()
                .and_then(|san| san.split_once(':').map(|(_, v)| v))
        })
    }

    fn read(&mut self, der: &[u8]) -> Option<()> {
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
        let (cert, _) = tlv(der, 0x30)?;
        let (mut tbs, _) = tlv(cert, 0x30)?;
        // [0] EXPLICIT version OPTIONAL
        if tbs.first() == Some(&0xA0) {
            tbs = tlv(tbs, 0xA0)?.1;
        }
        let rest = tlv(tbs, 0x02)?.1; // serialNumber
        let rest = tlv(rest, 0x30)?.1; // signature
        let rest = tlv(rest, 0x30)?.1; // issuer
        let rest = tlv(rest, 0x30)?.1; // validity
        let (subject, rest) = tlv(rest, 0x30)?;
        self.common_name = common_name(subject);
        let mut rest = tlv(rest, 0x30)?.1; // subjectPublicKeyInfo
        // [1] issuerUniqueID, [2] subjectUniqueID, [3] EXPLICIT extensions.
        while let Some(&tag) = rest.first() {
            let (body, next) = tlv(rest, tag)?;
            if tag == 0xA3 {
                self.extensions(body);
            }
            rest = next;
        }
        Some(())
    }

    fn extensions(&mut self, explicit: &[u8]) -> Option<()> {
        let (mut list, _) = tlv(explicit, 0x30)?;
        while !list.is_empty() {
            let (ext, next) = tlv(list, 0x30)?;
            list = next;
            let (oid, mut rest) = tlv(ext, 0x06)?;
            // id-ce-subjectAltName, 2.5.29.17
            if oid != [0x55, 0x1D, 0x11] {
                continue;
            }
            if rest.first() == Some(&0x01) {
                rest = tlv(rest, 0x01)?.1; // critical
            }
            let (value, _) = tlv(rest, 0x04)?;
            let (mut names, _) = tlv(value, 0x30)?;
            while let Some(&tag) = names.first() {
                let (name, next) = tlv(names, tag)?;
                names = next;
                let text = match tag {
                    0x81 => format!("email:{}", String::from_utf8_lossy(name)),
                    0x82 => format!("DNS:{}", String::from_utf8_lossy(name)),
                    0x86 => format!("URI:{}", String::from_utf8_lossy(name)),
                    0x87 => match name.len() {
                        4 => {
                            let octets: [u8; 4] = name.try_into().ok()?;
                            format!("IP:{}", IpAddr::from(octets))
                        }
                        16 => {
                            let octets: [u8; 16] = name.try_into().ok()?;
                            format!("IP:{}", IpAddr::from(octets))
                        }
                        _ => continue,
                    },
                    _ => continue,
                };
                self.subject_alt_names.push(text);
            }
        }
        Some(())
    }
}

/// The Common Name of an X.501 Name (the last one when there are several, as OpenSSL does).
fn common_name(mut name: &[u8]) -> Option<String> {
    let mut found = None;
    // Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue)
    while !name.is_empty() {
        let (mut rdn, next) = tlv(name, 0x31)?;
        name = next;
        while !rdn.is_empty() {
            let (atv, next) = tlv(rdn, 0x30)?;
            rdn = next;
            let (oid, value) = tlv(atv, 0x06)?;
            // id-at-commonName, 2.5.4.3
            if oid == [0x55, 0x04, 0x03] {
                let tag = *value.first()?;
                let (text, _) = tlv(value, tag)?;
                found = match tag {
                    // UTF8String, PrintableString, TeletexString, IA5String
                    0x0C | 0x13 | 0x14 | 0x16 => Some(String::from_utf8_lossy(text).into_owned()),
                    // BMPString: UTF-16BE
                    0x1E => Some(String::from_utf16_lossy(
                        &text
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect::<Vec<_>>(),
                    )),
                    _ => found,
                };
            }
        }
    }
    found
}

/// Reads one DER element with tag `tag` from the front of `input`: its contents and what
/// follows it. Only single-byte tags and definite lengths of up to four bytes are read.
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = (rest.get(..n)?, rest.get(n..)?);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    Some((rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        assert_eq!(
            tlv(&[0x04, 0x01, 0xAA, 0xBB], 0x04),
            Some((&[0xAA][..], &[0xBB][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(
            tlv(&long, 0x04).map(|(v, r)| (v.len(), r.len())),
            Some((0x80, 0))
        );
        // Truncated, wrong tag, indefinite length, length longer than the input.
        assert_eq!(tlv(&[0x04], 0x04), None);
        assert_eq!(tlv(&[0x04, 0x00], 0x30), None);
        assert_eq!(tlv(&[0x04, 0x80, 0x00], 0x04), None);
        assert_eq!(tlv(&[0x04, 0x84, 0xFF, 0xFF, 0xFF, 0xFF], 0x04), None);
    }

    #[test]
    fn garbage_gives_an_empty_identity() {
        for input in [&b""[..], b"\x30", b"\x30\x03\x30\x01", &[0xFF; 64]] {
            let id = PeerIdentity::from_der(input);
            assert_eq!(id.common_name, None);
            assert!(id.subject_alt_names.is_empty());
            assert_eq!(id.certificate, input);
            assert_eq!(id.name(), None);
        }
    }

    #[test]
    fn common_name_is_read_from_a_name() {
        // SEQUENCE { SET { SEQUENCE { OID 2.5.4.6, PrintableString "" } },
        //            SET { SEQUENCE { OID 2.5.4.3, UTF8String "dev-1" } } }
        let name = [
            0x31, 0x09, 0x30, 0x07, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x00, //
            0x31, 0x0E, 0x30, 0x0C, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0C, 0x05, b'd', b'e', b'v',
            b'-', b'1',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("dev-1"));
        assert_eq!(common_name(&name[..12]), None);
    }

    #[test]
    fn reads_a_real_certificate_and_survives_every_mutation_of_it() {
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example".into(), "192.0.2.7".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let id = PeerIdentity::from_der(&der);
        assert_eq!(id.common_name.as_deref(), Some("device-7"));
        assert_eq!(id.subject_alt_names, ["DNS:a.example", "IP:192.0.2.7"]);
        // Every truncation, and pseudo-random byte flips (xorshift, fixed seed): no panic.
        for len in 0..der.len() {
            let _ = PeerIdentity::from_der(&der[..len]);
        }
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = der.clone();
            let at = (state as usize) % bytes.len();
            bytes[at] = (state >> 32) as u8;
            let _ = PeerIdentity::from_der(&bytes);
        }
    }
}
