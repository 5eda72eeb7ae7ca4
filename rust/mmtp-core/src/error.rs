//! The one error type of the core.

use thiserror::Error;

/// Everything that can go wrong in the core, each variant naming the culprit.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum MmtpError {
    /// An input array or table has the wrong size.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A value is NaN, infinite or out of its allowed range.
    #[error("invalid value: {0}")]
    Value(String),
    /// The geometry cannot be evaluated (coinciding atoms, degenerate cell).
    #[error("invalid geometry: {0}")]
    Geometry(String),
    /// The potential definition is inconsistent.
    #[error("invalid potential: {0}")]
    Potential(String),
}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, MmtpError>;
