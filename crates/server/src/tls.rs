//! Optional TLS for the listeners: the rustls configuration from PEM files,
//! an accept loop that serves an axum router over TLS with the same graceful
//! shutdown as `axum::serve`, and the identity that tonic serves gRPC with.
//!
//! rustls runs on the `ring` provider, the same one tonic's `tls-ring`
//! feature uses for gRPC, so the build carries one crypto library.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read the TLS certificate {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS certificate file {path} contains no certificate")]
    NoCert { path: String },
    #[error("failed to read the TLS private key {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid TLS certificate or key: {0}")]
    Config(#[from] rustls::Error),
    #[error("failed to read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Reads the PEM certificate chain and private key.
pub fn load_pem(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let display = |path: &Path| path.display().to_string();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: display(&files.cert),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: display(&files.cert),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Key {
        path: display(&files.key),
        source,
    })?;
    Ok((certs, key))
}

/// The rustls server configuration for HTTP, offering HTTP/2 and HTTP/1.1
/// through ALPN.
pub fn http_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = load_pem(files)?;
    // NOTE: rustls deprecates its ring provider for lacking post-quantum key
    // exchange; the aws-lc-rs provider would add a C and assembly build.
    #[expect(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate and key for tonic's TLS on the gRPC listener, checked
/// with the same PEM parser as the HTTP listener's.
pub fn grpc_identity(files: &TlsFiles) -> Result<tonic::transport::Identity, TlsError> {
    load_pem(files)?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    Ok(tonic::transport::Identity::from_pem(
        read(&files.cert)?,
        read(&files.key)?,
    ))
}

/// Serves `router` over TLS until `closed` resolves, then waits for open
/// connections to finish their requests.
///
/// A failed handshake or accept closes only that connection.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    closed: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(closed);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    // Out of file descriptors, typically: back off briefly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut closed => break,
        };

        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    graceful.shutdown().await;
}
