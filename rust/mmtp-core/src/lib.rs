//! mmtp-core: the science of mmtp_rs in pure Rust.
//!
//! * [`neighbors`]: cell-list neighbour search for periodic, mixed and open cells;
//! * [`basis_gen`]: the moment-tensor basis of any level in MLIP's table form;
//! * [`model`]: the magnetic Moment Tensor Potential and all its derivatives;
//! * [`threads`]: the thread pool (size from `MMTP_NUM_THREADS`, fork-safe).

pub mod basis_gen;
pub mod chebyshev;
pub mod loss;
pub mod error;
pub mod maxvol;
pub mod model;
pub mod neighbors;
pub mod num;
pub mod threads;

pub use error::{MmtpError, Result};
pub use model::{Config, EvalOptions, Output, Potential, Tables};
