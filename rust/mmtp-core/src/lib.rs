//! mmtp-core: the science of mmtp_rs in pure Rust.
//!
//! * [`neighbors`]: cell-list neighbour search for periodic, mixed and open cells;
//! * [`basis_gen`]: the moment-tensor basis of any level in MLIP's table form;
//! * [`model`]: the magnetic Moment Tensor Potential and all its derivatives;
//! * [`spin_mc`]: Metropolis Monte Carlo of collinear moments with local energy updates;
//! * [`threads`]: the thread pool (size from `MMTP_NUM_THREADS`, fork-safe);
//! * [`alloc`]: a global allocator that reuses large blocks (installed by the Python extension).

pub mod alloc;
pub mod basis_gen;
pub mod chebyshev;
pub mod loss;
pub mod error;
pub mod maxvol;
pub mod model;
pub mod neighbors;
pub mod num;
pub mod spin_mc;
pub mod threads;

pub use error::{MmtpError, Result};
pub use model::{Config, EvalOptions, Output, Potential, Tables};

/// Index of the first non-finite entry of `x` (inf or NaN), if any. A count
/// of the finite entries is taken first, which vectorises: results are
/// checked after every evaluation, so the check must cost little next to it.
pub(crate) fn first_non_finite(x: &[f64]) -> Option<usize> {
    let finite: usize = x.iter().map(|v| (v.abs() <= f64::MAX) as usize).sum();
    if finite == x.len() {
        None
    } else {
        x.iter().position(|v| !v.is_finite())
    }
}

/// Whether the AVX2 kernels can run here (`MMTP_NO_SIMD=1` turns them off).
pub(crate) fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::env::var_os("MMTP_NO_SIMD").is_none()
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
