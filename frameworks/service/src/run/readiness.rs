//! Readiness checks (Marathon's `readinessChecks`): the framework itself
//! asks a new, healthy instance over HTTP whether it is ready to take
//! traffic, every `intervalSeconds`, until it answers one of
//! `httpStatusCodesForReady`. A deployment counts an instance of an app
//! with a readiness check only once it is ready.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::app::{AppDefinition, HttpScheme, ReadinessCheck};

/// The readiness check of an app and the index of the port it probes, if
/// the app has one.
#[must_use]
pub fn check_of(def: &AppDefinition) -> Option<(&ReadinessCheck, usize)> {
    let check = def.readiness_checks.first()?;
    let index = def
        .port_names()
        .iter()
        .position(|n| *n == Some(check.port_name.as_str()))?;
    Some((check, index))
}

/// Whether the instance at `addr` is ready: a GET of the check's path
/// answered, within its timeout, with one of its status codes.
pub async fn probe(check: &ReadinessCheck, addr: SocketAddr) -> bool {
    if check.protocol == HttpScheme::Https {
        // Refused when the app is validated; never probed.
        return false;
    }
    let Ok(uri) = format!("http://{addr}{}", check.path).parse::<hyper::Uri>() else {
        return false;
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    match tokio::time::timeout(check.timeout.max(Duration::from_millis(1)), client.get(uri)).await {
        Ok(Ok(response)) => check
            .http_status_codes_for_ready
            .contains(&response.status().as_u16()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppVersion;
    use crate::time::Timestamp;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn app() -> AppVersion {
        let json = r#"{"id": "/web", "cmd": "httpd", "cpus": 0.1, "mem": 32,
            "portDefinitions": [{"port": 0, "name": "admin"}, {"port": 0, "name": "http-api"}],
            "readinessChecks": [{"path": "/ready", "portName": "http-api", "timeoutSeconds": 1,
                                 "httpStatusCodesForReady": [200, 204]}]}"#;
        AppVersion::first(
            AppDefinition::from_json(json).unwrap(),
            Timestamp::from_millis(1),
        )
    }

    /// A server answering every request with `status`.
    async fn server(status: u16) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn ready_only_on_the_listed_codes() {
        let v = app();
        let (check, index) = check_of(&v.definition).unwrap();
        assert_eq!(index, 1, "the port named http-api");
        assert!(probe(check, server(204).await).await);
        assert!(!probe(check, server(503).await).await);
        // Nothing listens: not ready, within the timeout.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe(check, closed).await);
    }
}
