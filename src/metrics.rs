//! The server's metrics: counters, latest latencies and histograms, kept in one process-wide
//! registry and rendered in the Prometheus text exposition format (0.0.4).
//!
//! The hot path (one reconcile) costs an uncontended mutex and a few atomic adds; everything
//! that needs looking at the store (objects, size, snapshots, identifier pools) is gathered when
//! metrics are asked for, by the caller of [`render`], not counted as it happens. Names follow
//! Prometheus' conventions: `choreo_` prefix, `_total` counters, `_seconds` durations, base
//! units. The registry is global because metrics describe the process (as Prometheus' own
//! client libraries do); a process runs one server.
//!
//! Architecture invariant: counts and formats; knows nothing of the store, engine or sockets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Upper bounds of the duration histograms, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// A duration histogram (cumulative buckets are computed when rendered).
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += s;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// One reconciler's outcomes.
#[derive(Debug, Default, Clone)]
pub struct ReconcilerStats {
    pub success: u64,
    pub error: u64,
    pub requeue: u64,
    pub duration: Histogram,
    pub last: Duration,
}

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error,
    Requeue,
}

/// The latest latencies, for `server get`.
#[derive(Debug, Default, Clone)]
pub struct Latest {
    pub load: Option<Duration>,
    pub run: Option<Duration>,
    pub reconcile: Option<Duration>,
    pub sdc: Option<Duration>,
}

#[derive(Debug, Default)]
struct Guarded {
    reconcilers: BTreeMap<String, ReconcilerStats>,
    /// (mode, result) → count.
    runs: BTreeMap<(&'static str, &'static str), u64>,
    run_duration: BTreeMap<&'static str, Histogram>,
    load_duration: Histogram,
    latest: Latest,
    requests: BTreeMap<&'static str, u64>,
}

/// The registry.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    start_time: f64,
    loads_ok: AtomicU64,
    loads_failed: AtomicU64,
    watch_events: AtomicU64,
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
    queue_depth: AtomicU64,
    watches: AtomicU64,
    sdc_passes: AtomicU64,
    ahead_used: AtomicU64,
    ahead_discarded: AtomicU64,
    guarded: Mutex<Guarded>,
}

/// A `get -w` or `wait` stream, counted in `choreo_watches` while it lives (a panic included).
pub struct WatchStream(());

impl WatchStream {
    pub fn open() -> WatchStream {
        global().watches.fetch_add(1, Ordering::Relaxed);
        WatchStream(())
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let _ = global().watches.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// The process's registry.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        started: Instant::now(),
        start_time: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        loads_ok: AtomicU64::new(0),
        loads_failed: AtomicU64::new(0),
        watch_events: AtomicU64::new(0),
        fetches_ok: AtomicU64::new(0),
        fetches_failed: AtomicU64::new(0),
        queue_depth: AtomicU64::new(0),
        watches: AtomicU64::new(0),
        sdc_passes: AtomicU64::new(0),
        ahead_used: AtomicU64::new(0),
        ahead_discarded: AtomicU64::new(0),
        guarded: Mutex::new(Guarded::default()),
    })
}

impl Metrics {
    fn guarded(&self) -> std::sync::MutexGuard<'_, Guarded> {
        self.guarded.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn reconcile(&self, reconciler: &str, outcome: Outcome, took: Duration) {
        let mut g = self.guarded();
        g.latest.reconcile = Some(took);
        // Look up before inserting: the name is allocated once per reconciler, not per call.
        if !g.reconcilers.contains_key(reconciler) {
            g.reconcilers.insert(reconciler.to_string(), ReconcilerStats::default());
        }
        if let Some(s) = g.reconcilers.get_mut(reconciler) {
            match outcome {
                Outcome::Success => s.success += 1,
                Outcome::Error => s.error += 1,
                Outcome::Requeue => s.requeue += 1,
            }
            s.duration.observe(took);
            s.last = took;
        }
    }

    pub fn run(&self, mode: &'static str, success: bool, took: Duration) {
        let mut g = self.guarded();
        *g.runs.entry((mode, if success { "success" } else { "failure" })).or_default() += 1;
        g.run_duration.entry(mode).or_default().observe(took);
        g.latest.run = Some(took);
    }

    pub fn load(&self, success: bool, took: Duration) {
        if success { &self.loads_ok } else { &self.loads_failed }.fetch_add(1, Ordering::Relaxed);
        let mut g = self.guarded();
        g.load_duration.observe(took);
        g.latest.load = Some(took);
    }

    pub fn sdc_pass(&self, took: Duration) {
        self.sdc_passes.fetch_add(1, Ordering::Relaxed);
        self.guarded().latest.sdc = Some(took);
    }

    pub fn watch_event(&self) {
        self.watch_events.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fetch(&self, success: bool) {
        if success { &self.fetches_ok } else { &self.fetches_failed }.fetch_add(1, Ordering::Relaxed);
    }

    /// A reconcile the worker started ahead of its turn was used (its inputs had not changed)
    /// or thrown away.
    pub fn ahead(&self, used: bool) {
        if used { &self.ahead_used } else { &self.ahead_discarded }.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_queue_depth(&self, n: usize) {
        self.queue_depth.store(n as u64, Ordering::Relaxed);
    }

    pub fn request(&self, name: &'static str) {
        *self.guarded().requests.entry(name).or_default() += 1;
    }

    /// Loads so far: (succeeded, failed).
    pub fn loads(&self) -> (u64, u64) {
        (self.loads_ok.load(Ordering::Relaxed), self.loads_failed.load(Ordering::Relaxed))
    }

    /// Runs so far: (all, failed).
    pub fn runs(&self) -> (u64, u64) {
        let g = self.guarded();
        let all = g.runs.values().sum();
        let failed = g.runs.iter().filter(|((_, r), _)| *r == "failure").map(|(_, n)| n).sum();
        (all, failed)
    }

    pub fn watch_events(&self) -> u64 {
        self.watch_events.load(Ordering::Relaxed)
    }

    /// Clones and fetches so far, whatever their result.
    pub fn fetches(&self) -> u64 {
        self.fetches_ok.load(Ordering::Relaxed) + self.fetches_failed.load(Ordering::Relaxed)
    }

    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    pub fn latest(&self) -> Latest {
        self.guarded().latest.clone()
    }

    /// Each reconciler's outcomes so far.
    pub fn reconcilers(&self) -> BTreeMap<String, ReconcilerStats> {
        self.guarded().reconcilers.clone()
    }
}

/// What the caller gathers from the server at the time of asking.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub objects: u64,
    pub store_bytes: u64,
    pub snapshots: u64,
    pub ready: bool,
    /// Per identifier pool of `-r`: (backend group, namespace, index, pool, size, used).
    pub pools: Vec<(String, String, String, String, f64, f64)>,
    /// With `-s`: nodes, valid nodes, errors of the latest pass.
    pub sdc: Option<(u64, u64, u64)>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The registry and `gauges` in the Prometheus text exposition format.
pub fn render(m: &Metrics, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let g = m.guarded();
    family(&mut out, "choreo_up", "gauge", "1 when the server serves its project (status Ready).");
    let _ = writeln!(out, "choreo_up {}", u8::from(gauges.ready));
    family(&mut out, "choreo_start_time_seconds", "gauge", "When the server started, in seconds since the epoch.");
    let _ = writeln!(out, "choreo_start_time_seconds {}", m.start_time);
    family(&mut out, "choreo_uptime_seconds", "gauge", "Seconds since the server started.");
    let _ = writeln!(out, "choreo_uptime_seconds {}", m.uptime().as_secs_f64());

    family(&mut out, "choreo_loads_total", "counter", "Loads of the project, by result.");
    let _ = writeln!(out, "choreo_loads_total{{result=\"success\"}} {}", m.loads_ok.load(Ordering::Relaxed));
    let _ = writeln!(out, "choreo_loads_total{{result=\"failure\"}} {}", m.loads_failed.load(Ordering::Relaxed));
    family(&mut out, "choreo_load_duration_seconds", "histogram", "How long loads of the project took.");
    g.load_duration.render(&mut out, "choreo_load_duration_seconds", "");

    family(
        &mut out,
        "choreo_runs_total",
        "counter",
        "Runs (run once; settled bursts of the continuous runner), by mode and result.",
    );
    for mode in ["once", "continuous"] {
        for result in ["success", "failure"] {
            let n = g.runs.get(&(mode, result)).copied().unwrap_or(0);
            let _ = writeln!(out, "choreo_runs_total{{mode=\"{mode}\",result=\"{result}\"}} {n}");
        }
    }
    family(&mut out, "choreo_run_duration_seconds", "histogram", "How long runs took, by mode.");
    for (mode, h) in &g.run_duration {
        h.render(&mut out, "choreo_run_duration_seconds", &format!("mode=\"{mode}\""));
    }

    family(
        &mut out,
        "choreo_reconcile_total",
        "counter",
        "Reconciles, by reconciler and result (success, error, requeue).",
    );
    for (name, s) in &g.reconcilers {
        let r = escape(name);
        for (result, n) in [("success", s.success), ("error", s.error), ("requeue", s.requeue)] {
            let _ = writeln!(out, "choreo_reconcile_total{{reconciler=\"{r}\",result=\"{result}\"}} {n}");
        }
    }
    family(&mut out, "choreo_reconcile_duration_seconds", "histogram", "How long reconciles took, by reconciler.");
    for (name, s) in &g.reconcilers {
        s.duration.render(&mut out, "choreo_reconcile_duration_seconds", &format!("reconciler=\"{}\"", escape(name)));
    }
    family(
        &mut out,
        "choreo_reconciles_ahead_total",
        "counter",
        "Reconciles the worker started while the one before was stored, by result (used; discarded: its inputs changed).",
    );
    let _ = writeln!(out, "choreo_reconciles_ahead_total{{result=\"used\"}} {}", m.ahead_used.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "choreo_reconciles_ahead_total{{result=\"discarded\"}} {}",
        m.ahead_discarded.load(Ordering::Relaxed)
    );
    family(&mut out, "choreo_queue_depth", "gauge", "Items waiting in the runner's queue (ready and delayed).");
    let _ = writeln!(out, "choreo_queue_depth {}", m.queue_depth.load(Ordering::Relaxed));
    family(&mut out, "choreo_watches", "gauge", "Open `get -w` and `wait` streams.");
    let _ = writeln!(out, "choreo_watches {}", m.watches.load(Ordering::Relaxed));
    family(&mut out, "choreo_watch_events_total", "counter", "Batches of file changes the watcher reported.");
    let _ = writeln!(out, "choreo_watch_events_total {}", m.watch_events.load(Ordering::Relaxed));
    family(
        &mut out,
        "choreo_git_fetches_total",
        "counter",
        "Clones and fetches of server apply and plan --ref, by result.",
    );
    let _ = writeln!(out, "choreo_git_fetches_total{{result=\"success\"}} {}", m.fetches_ok.load(Ordering::Relaxed));
    let _ =
        writeln!(out, "choreo_git_fetches_total{{result=\"failure\"}} {}", m.fetches_failed.load(Ordering::Relaxed));
    family(&mut out, "choreo_requests_total", "counter", "Client requests the engine handled, by request.");
    for (name, n) in &g.requests {
        let _ = writeln!(out, "choreo_requests_total{{request=\"{name}\"}} {n}");
    }
    drop(g);

    family(&mut out, "choreo_store_objects", "gauge", "Objects in the API store.");
    let _ = writeln!(out, "choreo_store_objects {}", gauges.objects);
    family(&mut out, "choreo_store_size_bytes", "gauge", "The store's database on disk.");
    let _ = writeln!(out, "choreo_store_size_bytes {}", gauges.store_bytes);
    family(&mut out, "choreo_snapshots", "gauge", "Run snapshots kept.");
    let _ = writeln!(out, "choreo_snapshots {}", gauges.snapshots);
    if !gauges.pools.is_empty() {
        family(&mut out, "choreo_ids_size", "gauge", "Identifiers in each pool of -r (addresses, ids).");
        for (backend, ns, index, pool, size, _) in &gauges.pools {
            let _ = writeln!(
                out,
                "choreo_ids_size{{backend=\"{backend}\",namespace=\"{}\",index=\"{}\",pool=\"{}\"}} {size}",
                escape(ns),
                escape(index),
                escape(pool)
            );
        }
        family(&mut out, "choreo_ids_allocated", "gauge", "Identifiers allocated in each pool of -r.");
        for (backend, ns, index, pool, _, used) in &gauges.pools {
            let _ = writeln!(
                out,
                "choreo_ids_allocated{{backend=\"{backend}\",namespace=\"{}\",index=\"{}\",pool=\"{}\"}} {used}",
                escape(ns),
                escape(index),
                escape(pool)
            );
        }
    }
    if let Some((nodes, valid, errors)) = gauges.sdc {
        family(&mut out, "choreo_sdc_nodes", "gauge", "Target nodes of -s in the latest pass, by validity.");
        let _ = writeln!(out, "choreo_sdc_nodes{{valid=\"true\"}} {valid}");
        let _ = writeln!(out, "choreo_sdc_nodes{{valid=\"false\"}} {}", nodes - valid.min(nodes));
        family(&mut out, "choreo_sdc_errors", "gauge", "Errors in the device configs of the latest -s pass.");
        let _ = writeln!(out, "choreo_sdc_errors {errors}");
        family(
            &mut out,
            "choreo_sdc_passes_total",
            "counter",
            "Passes of -s (merge and validation of device configs).",
        );
        let _ = writeln!(out, "choreo_sdc_passes_total {}", m.sdc_passes.load(Ordering::Relaxed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "r=\"a\"");
        assert!(out.contains("x_seconds_bucket{r=\"a\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{r=\"a\",le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{r=\"a\",le=\"60\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{r=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count{r=\"a\"} 3\n"), "{out}");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
