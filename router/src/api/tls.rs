//! TLS for the TCP API: the certificate chain and private key from PEM files named in
//! `[api_tls]`, served with rustls (ring), HTTP/1.1 only.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::api::ApiTlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("api_tls.cert_file {path}: cannot read a PEM certificate chain")]
    Cert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("api_tls.cert_file {path} holds no certificate")]
    NoCert { path: PathBuf },
    #[error("api_tls.key_file {path}: cannot read a PEM private key")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("api_tls: the certificate and key do not make a usable TLS configuration")]
    Config(#[source] rustls::Error),
}

/// Loads `cfg` into an acceptor.
pub fn acceptor(cfg: &ApiTlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cfg.cert_file.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cfg.cert_file.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|source| TlsError::Key {
        path: cfg.key_file.clone(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Config)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
