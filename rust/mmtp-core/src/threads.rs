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

/// Chunk length for [`ordered_reduce`]: at least `min_len` items and at most
/// `max_chunks` chunks. It depends on `n` only, never on the thread count.
pub fn chunk_len(n: usize, min_len: usize, max_chunks: usize) -> usize {
    n.div_ceil(max_chunks.max(1)).max(min_len).max(1)
}

/// The parts one after another in one vector, copied in parallel, each entry
/// written once (the vector is not zero-filled first: for neighbour lists and
/// site-gradient rows of large cells that would be as much work again).
pub fn concat<T: Copy + Send + Sync>(parts: &[&[T]]) -> Vec<T> {
    use rayon::prelude::*;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out: Vec<T> = Vec::with_capacity(total);
    let mut dst = Vec::with_capacity(parts.len());
    let mut rest = &mut out.spare_capacity_mut()[..total];
    for p in parts {
        let (a, b) = std::mem::take(&mut rest).split_at_mut(p.len());
        dst.push(a);
        rest = b;
    }
    dst.into_par_iter().zip(parts.par_iter()).for_each(|(d, src)| {
        for (x, v) in d.iter_mut().zip(src.iter()) {
            x.write(*v);
        }
    });
    // SAFETY: the destination slices tile 0..total and each was written in full above
    unsafe { out.set_len(total) };
    out
}

/// Deterministic parallel reduction over `0..n`.
///
/// The range is cut into chunks of `chunk` items (fixed by the caller,
/// independent of the number of threads); each chunk is folded sequentially
/// in index order from `init()`, and the chunk results are combined along a
/// fixed binary tree (left + right, split at chunk boundaries). Floating-point
/// sums therefore come out bit-identical at any thread count and in any run,
/// while at most a few partial results per thread are alive at once.
pub fn ordered_reduce<A, I, F, C>(n: usize, chunk: usize, init: &I, fold: &F, combine: &C) -> A
where
    A: Send,
    I: Fn() -> A + Sync,
    F: Fn(&mut A, usize) + Sync,
    C: Fn(&mut A, A) + Sync,
{
    fn tree<A, I, F, C>(lo: usize, hi: usize, chunk: usize, init: &I, fold: &F, combine: &C) -> A
    where
        A: Send,
        I: Fn() -> A + Sync,
        F: Fn(&mut A, usize) + Sync,
        C: Fn(&mut A, A) + Sync,
    {
        if hi - lo <= chunk {
            let mut acc = init();
            for i in lo..hi {
                fold(&mut acc, i);
            }
            return acc;
        }
        let chunks = (hi - lo).div_ceil(chunk);
        let mid = lo + (chunks / 2) * chunk;
        let (mut left, right) =
            rayon::join(|| tree(lo, mid, chunk, init, fold, combine), || tree(mid, hi, chunk, init, fold, combine));
        combine(&mut left, right);
        left
    }
    tree(0, n, chunk.max(1), init, fold, combine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_reduce_is_independent_of_the_thread_count() {
        let xs: Vec<f64> = (0..10_000).map(|i| ((i as f64) * 0.7).sin() * 10f64.powi((i % 17) as i32 - 8)).collect();
        let sum = |threads: usize| {
            let pool = ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                ordered_reduce(xs.len(), chunk_len(xs.len(), 16, 64), &|| 0.0f64, &|a: &mut f64, i| *a += xs[i], &|a: &mut f64, b| *a += b)
            })
        };
        let one = sum(1);
        for t in [2, 3, 4, 7] {
            assert_eq!(one.to_bits(), sum(t).to_bits());
        }
        assert_eq!(ordered_reduce(0, 4, &|| 1usize, &|a: &mut usize, _| *a += 1, &|a: &mut usize, b| *a += b), 1);
    }
}
