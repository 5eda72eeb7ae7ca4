//! The thread pool of the core: size from `MMTP_NUM_THREADS` (default: all
//! cores) or [`set_num_threads`]; rebuilt automatically in a forked child,
//! whose copy of the parent's pool has no threads behind it.

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, Mutex};

struct PoolState {
    pid: u32,
    n: usize,
    pool: Arc<ThreadPool>,
}

static POOL: Mutex<Option<PoolState>> = Mutex::new(None);
static REQUESTED: Mutex<Option<usize>> = Mutex::new(None);

fn default_threads() -> usize {
    if let Some(n) = *REQUESTED.lock().unwrap_or_else(|e| e.into_inner()) {
        return n;
    }
    if let Ok(s) = std::env::var("MMTP_NUM_THREADS") {
        if let Ok(n) = s.trim().parse::<usize>() {
            if n > 0 {
                return n;
            }
        }
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Parse and check a thread-count value (used for the environment variable).
pub fn parse_thread_count(s: &str) -> Option<usize> {
    s.trim().parse::<usize>().ok().filter(|&n| n > 0)
}

/// Set the number of worker threads used from now on (n >= 1).
pub fn set_num_threads(n: usize) {
    let n = n.max(1);
    *REQUESTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
    let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(st) = g.take() {
        if st.pid != std::process::id() {
            // pool of the parent process: its threads do not exist here
            std::mem::forget(st);
        }
    }
}

/// Number of worker threads the next call will use.
pub fn num_threads() -> usize {
    let g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    match &*g {
        Some(st) if st.pid == std::process::id() => st.n,
        _ => default_threads(),
    }
}

fn pool() -> Arc<ThreadPool> {
    let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some(st) = &*g {
        if st.pid == pid {
            return st.pool.clone();
        }
    }
    if let Some(old) = g.take() {
        std::mem::forget(old); // inherited across fork
    }
    let n = default_threads();
    let built = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("mmtp-{i}"))
        .build()
        .map(Arc::new);
    let pool = match built {
        Ok(p) => p,
        Err(_) => Arc::new(
            ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("a one-thread pool can always be built"),
        ),
    };
    *g = Some(PoolState { pid, n, pool: pool.clone() });
    pool
}

/// Run `f` inside the core's thread pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}
