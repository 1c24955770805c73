//! The process's memory allocator and when it gives memory back.
//!
//! jemalloc replaces glibc malloc. A reconcile allocates and frees thousands of small blocks
//! (`serde_json` maps, strings, Starlark heaps); past glibc's per-thread cache of seven blocks
//! per size, each one went through its bins and consolidation, ~40% of a 10k-object run.
//! Outside runs freed pages go back to the system at once (`dirty_decay_ms:0`), so the resident
//! size follows what is live. During a run that costs more than it saves: every freed page run
//! was returned with `madvise`, whose TLB shootdown interrupts the other core, a quarter of
//! sled's I/O threads and, through the interrupts, of everything else (a 10k-object `run once`
//! took 1.70 s instead of 1.45 s). So a run lets freed pages sit for [`RUN_DECAY_MS`] before
//! they are returned ([`Running`]) — a `run once`, and a burst of the continuous runner that
//! outlasts one slice (the first burst of `run start` on 10k objects with reconcilers in the
//! server thread: 1.35 s → 0.98 s) — and the reconcile worker, which does nothing but run, always
//! does.
//!
//! The `heapprof` feature leaves the system allocator in place, so that heap profilers that
//! intercept malloc (heaptrack, valgrind) see every allocation:
//! `cargo build --release --features heapprof && heaptrack target/release/choreo server start …`.
//! Then everything here is a no-op.
//!
//! Invariant: knows the allocator, nothing about what the memory holds.

/// How long a run keeps freed pages before returning them to the system.
pub const RUN_DECAY_MS: isize = 50;

#[cfg(not(feature = "heapprof"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: freed pages go back to the system at once, and two
/// arenas (the engine and everything else share memory rather than each of the default eight
/// per core keeping its own).
#[cfg(not(feature = "heapprof"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:2,dirty_decay_ms:0,muzzy_decay_ms:0\0";

/// How many [`Running`] there are (runs of tests in one process overlap).
static RUNS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// While one is alive, freed pages are returned to the system only after [`RUN_DECAY_MS`];
/// when the last is dropped, at once again, and what was kept is returned now.
pub struct Running(());

impl Running {
    pub fn start() -> Running {
        let mut runs = RUNS.lock().unwrap_or_else(|p| p.into_inner());
        *runs += 1;
        if *runs == 1 {
            set_dirty_decay(RUN_DECAY_MS);
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut runs = RUNS.lock().unwrap_or_else(|p| p.into_inner());
        *runs = runs.saturating_sub(1);
        if *runs == 0 {
            set_dirty_decay(0);
            release();
        }
    }
}

/// For a process that only runs (the reconcile worker): freed pages always wait
/// [`RUN_DECAY_MS`].
pub fn always_running() {
    set_dirty_decay(RUN_DECAY_MS);
}

/// Returns the memory the allocators hold but nothing uses to the system.
pub fn release() {
    #[cfg(not(feature = "heapprof"))]
    if let Err(e) = purge() {
        log::debug!("cannot return jemalloc's free pages: {e}");
    }
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions. (glibc's
    // heap still serves C libraries: libgit2, libyang.)
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets how long freed pages wait before they are returned, for every arena there is and any
/// created later.
fn set_dirty_decay(ms: isize) {
    #[cfg(not(feature = "heapprof"))]
    {
        let mut failed = mallctl_write("arenas.dirty_decay_ms", Some(&ms)).err();
        for arena in 0..arenas() {
            if let Err(e) = mallctl_write(&format!("arena.{arena}.dirty_decay_ms"), Some(&ms)) {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            log::debug!("cannot set jemalloc's decay to {ms} ms: {e}");
        }
    }
    #[cfg(feature = "heapprof")]
    let _ = ms;
}

/// Returns the free pages of every arena (`MALLCTL_ARENAS_ALL` is 4096) to the system.
#[cfg(not(feature = "heapprof"))]
fn purge() -> Result<(), String> {
    mallctl_write("arena.4096.purge", None::<&()>)
}

/// How many arenas jemalloc has.
#[cfg(not(feature = "heapprof"))]
fn arenas() -> u32 {
    let mut n: u32 = 0;
    let mut len = std::mem::size_of::<u32>();
    // SAFETY: `arenas.narenas` is an `unsigned` read into a buffer of its size.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arenas.narenas".as_ptr(),
            (&mut n as *mut u32).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc == 0 {
        n
    } else {
        0
    }
}

/// Writes `value` (or nothing, for a command) to the jemalloc control `name`.
#[cfg(not(feature = "heapprof"))]
fn mallctl_write<T>(name: &str, value: Option<&T>) -> Result<(), String> {
    let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    let (newp, newlen) = match value {
        Some(v) => ((v as *const T).cast_mut().cast(), std::mem::size_of::<T>()),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: `newp` points to a live `T` of `newlen` bytes (or is null with 0), which jemalloc
    // only reads; no old value is asked for.
    let rc =
        unsafe { tikv_jemalloc_sys::mallctl(cname.as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), newp, newlen) };
    match rc {
        0 => Ok(()),
        e => Err(format!("{name}: error {e}")),
    }
}

#[cfg(all(test, not(feature = "heapprof")))]
mod tests {
    use super::*;

    fn decay(name: &str) -> isize {
        let cname = std::ffi::CString::new(name).unwrap();
        let mut v: isize = -2;
        let mut len = std::mem::size_of::<isize>();
        // SAFETY: an `ssize_t` control read into a buffer of its size.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(cname.as_ptr(), (&mut v as *mut isize).cast(), &mut len, std::ptr::null_mut(), 0)
        };
        assert_eq!(rc, 0, "{name}");
        v
    }

    #[test]
    fn a_run_keeps_freed_pages_for_a_while_and_the_last_returns_them() {
        // Other tests of this process may run too: while both are alive the decay is the run's,
        // and the count says when the last one ends.
        let run = Running::start();
        let other = Running::start();
        assert_eq!(decay("arena.0.dirty_decay_ms"), RUN_DECAY_MS);
        assert_eq!(decay("arenas.dirty_decay_ms"), RUN_DECAY_MS);
        drop(other);
        assert_eq!(decay("arena.0.dirty_decay_ms"), RUN_DECAY_MS, "one run is left");
        let before = *RUNS.lock().unwrap();
        drop(run);
        assert_eq!(*RUNS.lock().unwrap(), before - 1);
    }

    #[test]
    fn free_pages_can_be_returned_and_the_arenas_are_counted() {
        assert!(arenas() >= 2, "narenas:2 plus any jemalloc adds");
        purge().unwrap();
    }
}
