//! Whether NATS servers require TLS, asked before anything is sent to them: [`servers_without_tls`]
//! reads each server's `INFO` greeting over a plain TCP connection and drops it, so a refusal
//! to use a server in clear (`railyard admin init`) never sends it a password.

use std::time::Duration;

use async_nats::ServerAddr;
use tokio::io::AsyncBufReadExt as _;

use crate::error::BusError;

/// The servers of `url` (comma-separated) that answered with an `INFO` not requiring TLS, as
/// `host:port`. A server that does not answer within `timeout`, or greets in TLS first, is
/// not listed: connecting with TLS required then fails on its own.
pub async fn servers_without_tls(url: &str, timeout: Duration) -> Result<Vec<String>, BusError> {
    let mut plain = Vec::new();
    for address in url.split(',').map(str::trim) {
        let parsed = address
            .parse::<ServerAddr>()
            .map_err(|error| BusError::InvalidUrl {
                url: crate::bus::redact_url(address),
                source: Box::new(error),
            })?;
        if parsed.tls_required() || parsed.is_websocket() {
            continue;
        }
        let host = parsed.host().to_owned();
        let port = parsed.port();
        match tokio::time::timeout(timeout, requires_tls(&host, port)).await {
            Ok(Ok(false)) => plain.push(format!("{host}:{port}")),
            Ok(Ok(true)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%host, port, %error, "no INFO from nats server; not checked")
            }
            Err(_) => tracing::debug!(%host, port, "no INFO from nats server in time; not checked"),
        }
    }
    Ok(plain)
}

/// Reads the server's greeting (`INFO {...}`) and whether it says `tls_required`.
async fn requires_tls(host: &str, port: u16) -> std::io::Result<bool> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let info = line
        .strip_prefix("INFO ")
        .ok_or_else(|| std::io::Error::other(format!("expected INFO, got {line:?}")))?;
    let info: serde_json::Value =
        serde_json::from_str(info.trim()).map_err(std::io::Error::other)?;
    Ok(info
        .get("tls_required")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false))
}
