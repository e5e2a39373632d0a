//! Certificates made by the tests themselves (rcgen, ring): a CA, server certificates for
//! `127.0.0.1` / `localhost`, client certificates named by CN or by SAN, and the broken ones
//! the refusal cases need (expired, not yet valid, from another CA, a key that does not match).
//! Files are written as PEM into the test's own temporary directory, so nothing outlives it.
//!
//! Every certificate is X.509 v3 with the key usages webpki checks (rcgen's default), which is
//! why the tests do not use `openssl req` (a v1 certificate is refused by webpki).

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From a year ago to ten years ahead.
    Now,
    /// 2020 to 2021.
    Expired,
    /// From 2090.
    NotYet,
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let (from, to) = match validity {
        Validity::Now => ((2025, 1, 1), (2036, 1, 1)),
        Validity::Expired => ((2020, 1, 1), (2021, 1, 1)),
        Validity::NotYet => ((2090, 1, 1), (2095, 1, 1)),
    };
    params.not_before = date_time_ymd(from.0, from.1, from.2);
    params.not_after = date_time_ymd(to.0, to.1, to.2);
}

/// A certificate and its key.
pub struct Issued {
    pub cert: Certificate,
    pub key: KeyPair,
}

impl Issued {
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The certificate's DER bytes (to compare with what a server served).
    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Writes `<stem>.crt` and `<stem>.key` into `dir`, returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&crt, self.cert_pem()).unwrap();
        std::fs::write(&key, self.key_pem()).unwrap();
        (crt, key)
    }
}

/// A certificate authority that issues the test's certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub cert: Certificate,
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cn: Option<String>,
    pub sans: Vec<SanType>,
    pub validity: Validity,
    /// A server certificate (serverAuth) or a client one (clientAuth).
    pub server: bool,
}

impl Leaf {
    /// The server certificate for `127.0.0.1` and `localhost`.
    pub fn server() -> Leaf {
        Leaf {
            cn: Some("vigild test server".into()),
            sans: vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ],
            validity: Validity::Now,
            server: true,
        }
    }

    /// A client certificate whose common name is `cn` (no SAN).
    pub fn client(cn: &str) -> Leaf {
        Leaf {
            cn: Some(cn.into()),
            sans: Vec::new(),
            validity: Validity::Now,
            server: false,
        }
    }

    /// A client certificate with a DNS name in its SAN (and another CN).
    pub fn client_dns(dns: &str) -> Leaf {
        Leaf {
            cn: Some("not-the-dns-name".into()),
            sans: vec![SanType::DnsName(dns.try_into().unwrap())],
            validity: Validity::Now,
            server: false,
        }
    }

    /// A client certificate with a URI in its SAN (a SPIFFE id, say).
    pub fn client_uri(uri: &str) -> Leaf {
        Leaf {
            cn: Some("not-the-uri".into()),
            sans: vec![SanType::URI(uri.try_into().unwrap())],
            validity: Validity::Now,
            server: false,
        }
    }

    pub fn validity(mut self, validity: Validity) -> Leaf {
        self.validity = validity;
        self
    }
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::Now);
        let cert = params.self_signed(&key).unwrap();
        Ca { params, key, cert }
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::Now);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Ca { params, key, cert }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Writes the CA certificate to `dir/<stem>.crt`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.crt"));
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// Issues a certificate as `leaf` says, with a new key.
    pub fn issue(&self, leaf: &Leaf) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        if let Some(cn) = &leaf.cn {
            params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str());
        }
        params.subject_alt_names = leaf.sans.clone();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if leaf.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, leaf.validity);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Issued { cert, key }
    }
}

/// The files of a usual TLS setup in one directory: the CA, the server's certificate and key,
/// and a client certificate for `dev-1`.
pub struct Setup {
    pub ca: Ca,
    pub server: Issued,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Setup {
    /// Makes a CA and a server certificate and writes them into `dir`.
    pub fn new(dir: &Path) -> Setup {
        let ca = Ca::new("vigild test CA");
        let server = ca.issue(&Leaf::server());
        let ca_file = ca.write(dir, "ca");
        let (cert_file, key_file) = server.write(dir, "server");
        Setup {
            ca,
            server,
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// Issues a client certificate for `leaf` and writes it to `dir/<stem>.{crt,key}`.
    pub fn client(&self, dir: &Path, stem: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        self.ca.issue(leaf).write(dir, stem)
    }

    /// The `[tls]` table for these files (the caller adds `client_auth` and the like).
    pub fn table(&self, extra: &str) -> String {
        format!(
            "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = {:?}\nkey_file = {:?}\n\
             client_ca_file = {:?}\n{extra}\n",
            self.cert_file.display().to_string(),
            self.key_file.display().to_string(),
            self.ca_file.display().to_string(),
        )
    }
}
