//! TLS settings turned into rustls configurations, for the node's listener and for the
//! connections it and its clients make (replication links, the CLI).
//!
//! rustls with the ring provider, chosen explicitly rather than through a process-wide
//! default so that no code path depends on which provider some dependency installed first.
//! Files are PEM. Every error names the file and what was wrong with it, since a TLS
//! misconfiguration otherwise shows up only as a failed handshake far from its cause.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

/// ALPN identifiers, HTTP/2 preferred: a TLS client that speaks it gets it.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

/// The files a TLS listener is set up from (`server.tls`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// How to reach a TLS server: whom to trust and, for mutual TLS, who we are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates to trust; none = the public web PKI roots.
    pub ca: Option<PathBuf>,
    /// Our certificate and key, for a server that asks for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to verify the server's certificate against, when it is not the host in the
    /// address (a node reached by IP whose certificate names it by DNS name).
    pub server_name: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error(
            "no certificate in it (expected PEM blocks `BEGIN CERTIFICATE`)".into(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "private key",
        path: path.to_owned(),
        reason: format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            what,
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

impl ServerTls {
    /// The listener's rustls configuration, offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    roots("client CA", ca)?.into(),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(read_certs("certificate", &self.cert)?, read_key(&self.key)?)
            .map_err(|e| TlsError::File {
                what: "certificate and key",
                path: self.cert.clone(),
                reason: format!("do not go together: {e}"),
            })?;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }
}

impl ClientTls {
    /// The rustls configuration of a client (ALPN left empty for the connector to fill).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = match &self.ca {
            Some(ca) => roots("CA", ca)?,
            None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_certs("client certificate", cert)?, read_key(key)?)
                .map_err(|e| TlsError::File {
                    what: "client certificate and key",
                    path: cert.clone(),
                    reason: format!("do not go together: {e}"),
                }),
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(TlsError::Config(
                "a client certificate needs its key and a key its certificate: give both or \
                 neither"
                    .into(),
            )),
        }
    }

    /// `server_name` checked as a DNS name or IP address.
    pub fn fixed_server_name(&self) -> Result<Option<ServerName<'static>>, TlsError> {
        self.server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned()).map_err(|e| {
                    TlsError::Config(format!("server name {name:?} is not a DNS name or IP: {e}"))
                })
            })
            .transpose()
    }
}
