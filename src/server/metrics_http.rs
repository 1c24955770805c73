//! `--metrics-listen ADDR`: `/metrics` over HTTP for a Prometheus scrape, on a small
//! synchronous HTTP server (`tiny_http`) with one thread.
//!
//! Only `GET /metrics` (and `HEAD`) is served; anything else is 404 or 405. Off unless asked
//! for; the address is the operator's choice (the CLI defaults a bare port to loopback).
//!
//! Architecture invariant: renders what `Handle::metrics_text` gives; no other access.

use std::net::SocketAddr;
use std::sync::Arc;

use super::ServerError;
use crate::engine::Handle;

/// The running HTTP endpoint.
pub(super) struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: std::thread::JoinHandle<()>,
}

impl MetricsServer {
    /// Stops serving and waits for the thread.
    pub(super) fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

pub(super) fn start(addr: SocketAddr, handle: Handle) -> Result<MetricsServer, ServerError> {
    let server =
        Arc::new(tiny_http::Server::http(addr).map_err(|e| ServerError::Metrics { addr, message: e.to_string() })?);
    if !addr.ip().is_loopback() {
        log::warn!(
            "serving /metrics on {addr}, which is not a loopback address: anyone who reaches it can read the metrics"
        );
    }
    log::info!("serving metrics at http://{addr}/metrics");
    let s = server.clone();
    let thread = std::thread::Builder::new()
        .name("choreo-metrics".into())
        .spawn(move || serve(&s, &handle))
        .map_err(|source| ServerError::Thread { name: "choreo-metrics".into(), source })?;
    Ok(MetricsServer { server, thread })
}

fn serve(server: &tiny_http::Server, handle: &Handle) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or_default().to_string();
        let response = match (request.method(), path.as_str()) {
            (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
                let header = tiny_http::Header::from_bytes(
                    &b"Content-Type"[..],
                    &b"text/plain; version=0.0.4; charset=utf-8"[..],
                )
                .expect("a valid header");
                tiny_http::Response::from_string(handle.metrics_text()).with_header(header)
            }
            (_, "/metrics") => tiny_http::Response::from_string("only GET\n").with_status_code(405),
            _ => tiny_http::Response::from_string("not found: choreo serves /metrics\n").with_status_code(404),
        };
        if let Err(e) = request.respond(response) {
            log::debug!("a metrics scrape went away: {e}");
        }
    }
}
