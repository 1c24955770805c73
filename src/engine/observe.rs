//! What the server tells about itself besides its objects: the metrics registry joined with
//! what is read from the store at the time of asking (`server get`, `choreo metrics`,
//! `/metrics`). Answered on the asking thread, never by the engine.
//!
//! Invariant: reads only (a store reader, the status, the identifier pools).

use std::sync::Mutex;

use crate::backends::Backends;
use crate::metrics::{self, Gauges};
use crate::protocol::{IdsUsageRequest, ServerState, ServerStatus, StatusMetrics};
use crate::store::Reader;

/// The gauges of this moment.
pub(crate) fn gauges(reader: &Reader, status: &Mutex<ServerStatus>, backends: Option<&Backends>) -> Gauges {
    let status = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let pools = backends
        .map(|b| {
            b.usage(&IdsUsageRequest { namespace: None, index: None })
                .into_iter()
                .filter_map(|p| {
                    let size = p.size.parse::<f64>().ok()?;
                    let used = p.used.parse::<f64>().ok()?;
                    let backend = p.group.split('.').next().unwrap_or_default().to_string();
                    Some((backend, p.namespace, p.index, p.pool, size, used))
                })
                .collect()
        })
        .unwrap_or_default();
    Gauges {
        objects: reader.with(|s| s.objects.len() as u64),
        store_bytes: reader.size_on_disk(),
        snapshots: reader.snapshot_count().unwrap_or(0) as u64,
        ready: status.status == ServerState::Ready,
        pools,
        sdc: status.sdc.map(|s| (u64::from(s.nodes), u64::from(s.valid), s.errors.len() as u64)),
    }
}

/// `choreo metrics` and `/metrics`.
pub(crate) fn prometheus(reader: &Reader, status: &Mutex<ServerStatus>, backends: Option<&Backends>) -> String {
    metrics::render(metrics::global(), &gauges(reader, status, backends))
}

/// The summary `server get` shows.
pub(crate) fn status_metrics(
    reader: &Reader,
    status: &Mutex<ServerStatus>,
    backends: Option<&Backends>,
) -> StatusMetrics {
    let m = metrics::global();
    let g = gauges(reader, status, backends);
    let latest = m.latest();
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let ((loads_ok, load_failures), (runs, run_failures)) = (m.loads(), m.runs());
    StatusMetrics {
        uptime_secs: m.uptime().as_secs_f64(),
        objects: g.objects,
        store_bytes: g.store_bytes,
        snapshots: g.snapshots,
        loads: loads_ok + load_failures,
        load_failures,
        runs,
        run_failures,
        queue_depth: m.queue_depth(),
        watch_events: m.watch_events(),
        git_fetches: m.fetches(),
        reconcilers: m
            .reconcilers()
            .into_iter()
            .map(|(name, s)| (name, s.success + s.error + s.requeue, s.error, s.last.as_secs_f64() * 1e3))
            .collect(),
        last_load_ms: ms(latest.load),
        last_run_ms: ms(latest.run),
        last_reconcile_ms: ms(latest.reconcile),
        pools: g
            .pools
            .into_iter()
            .map(|(_, ns, index, pool, size, used)| (format!("{ns}/{index} {pool}"), used, size))
            .collect(),
    }
}
