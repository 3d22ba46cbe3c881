//! A throwaway certificate authority for TLS tests: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, a client certificate for mutual TLS, and a second CA nobody
//! trusts, all written as PEM files in a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// The PEM files of a test PKI.
pub struct Pki {
    _dir: TempDir,
    /// The CA that signed the certificates below.
    pub ca: PathBuf,
    /// A certificate for `localhost` and `127.0.0.1` (server auth) and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (client auth) and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, with a client certificate it signed: what an outsider would hold.
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("wasmkv-pki-")
            .tempdir()
            .expect("create the PKI's directory");
        let path = |name: &str| dir.path().join(name);
        let ca = certificate_authority("wasmkv test CA", &path("ca.pem"));
        leaf(
            &ca,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            &path("server.pem"),
            &path("server.key"),
        );
        leaf(
            &ca,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            &path("client.pem"),
            &path("client.key"),
        );
        let other = certificate_authority("someone else's CA", &path("other-ca.pem"));
        leaf(
            &other,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            &path("other-client.pem"),
            &path("other-client.key"),
        );
        Pki {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            other_ca: path("other-ca.pem"),
            other_client_cert: path("other-client.pem"),
            other_client_key: path("other-client.key"),
            _dir: dir,
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

fn certificate_authority(name: &str, cert_path: &Path) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("generate the CA key");
    let ca = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
    fs::write(cert_path, ca.pem()).expect("write the CA certificate");
    ca
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    cert_path: &Path,
    key_path: &Path,
) {
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, "wasmkv test");
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("generate a key");
    let cert = params.signed_by(&key, ca).expect("sign the certificate");
    fs::write(cert_path, cert.pem()).expect("write the certificate");
    fs::write(key_path, key.serialize_pem()).expect("write the key");
}
