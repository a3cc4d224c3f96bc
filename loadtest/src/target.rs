//! The address under load and the guard that keeps traffic on this machine.
//!
//! The tool sends only to the one address it is given. Every address the
//! name resolves to must be a loopback address unless the caller passes
//! `--allow-remote`; the requests then go to the first resolved address, so
//! a name cannot resolve differently between the check and the traffic.

use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("target {target} is not HOST:PORT")]
    Malformed { target: String },
    #[error("target {target} could not be resolved: {message}")]
    Resolve { target: String, message: String },
    #[error(
        "target {target} resolves to {addr}, which is not a loopback address; pass --allow-remote to load a remote server"
    )]
    NotLoopback { target: String, addr: SocketAddr },
}

/// Resolves `target` (`HOST:PORT`, an optional `http://` prefix and trailing
/// `/` allowed) and checks that every resolved address is loopback unless
/// `allow_remote` is set. Returns the address the requests will use.
pub fn resolve(target: &str, allow_remote: bool) -> Result<SocketAddr, TargetError> {
    let host_port = target
        .strip_prefix("http://")
        .unwrap_or(target)
        .trim_end_matches('/');
    if host_port.is_empty() || host_port.contains('/') || !host_port.contains(':') {
        return Err(TargetError::Malformed {
            target: target.to_string(),
        });
    }

    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| TargetError::Resolve {
            target: target.to_string(),
            message: e.to_string(),
        })?
        .collect();
    let Some(&first) = addrs.first() else {
        return Err(TargetError::Resolve {
            target: target.to_string(),
            message: "no addresses".into(),
        });
    };

    if !allow_remote && let Some(&addr) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(TargetError::NotLoopback {
            target: target.to_string(),
            addr,
        });
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_loopback() {
        let addr = resolve("127.0.0.1:8000", false).unwrap();

        assert_eq!(addr, "127.0.0.1:8000".parse().unwrap());
    }

    #[test]
    fn ipv6_loopback() {
        let addr = resolve("[::1]:9000", false).unwrap();

        assert_eq!(addr, "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn url_prefix() {
        let addr = resolve("http://127.0.0.2:80/", false).unwrap();

        assert_eq!(addr, "127.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn remote_refused() {
        let error = resolve("10.1.2.3:8000", false).unwrap_err();

        assert!(matches!(error, TargetError::NotLoopback { .. }));
    }

    #[test]
    fn unspecified_refused() {
        let error = resolve("0.0.0.0:8000", false).unwrap_err();

        assert!(matches!(error, TargetError::NotLoopback { .. }));
    }

    #[test]
    fn remote_allowed() {
        let addr = resolve("10.1.2.3:8000", true).unwrap();

        assert_eq!(addr, "10.1.2.3:8000".parse().unwrap());
    }

    #[test]
    fn missing_port() {
        let error = resolve("127.0.0.1", false).unwrap_err();

        assert!(matches!(error, TargetError::Malformed { .. }));
    }

    #[test]
    fn path_refused() {
        let error = resolve("http://127.0.0.1:80/v1", false).unwrap_err();

        assert!(matches!(error, TargetError::Malformed { .. }));
    }
}
