//! Bindings of the maxvol active set (`mmtp_core::maxvol`): the class
//! `mmtp_rs._core.ActiveMatrix`. Inputs are checked here (and copied when not C-contiguous); maxvol and
//! grading run with the GIL released in the core's thread pool.

use crate::{to_py, InvalidValueError, ShapeError};
use mmtp_core::maxvol::{ActiveMatrix, MaxvolOptions};
use mmtp_core::threads;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::borrow::Cow;

fn rows_of<'a>(b: &'a PyReadonlyArray2<f64>, m: usize, what: &str) -> PyResult<(Cow<'a, [f64]>, usize)> {
    let v = b.as_array();
    if v.shape()[1] != m {
        return Err(ShapeError::new_err(format!(
            "{what} must have shape (K, {m}), got {:?}",
            v.shape()
        )));
    }
    // a C-contiguous array is read in place (the read-only borrow keeps it unchanged)
    let data = match b.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(v.iter().copied().collect()),
    };
    Ok((data, v.shape()[0]))
}

fn square<'py>(py: Python<'py>, data: &[f64], m: usize) -> PyResult<Bound<'py, PyArray2<f64>>> {
    PyArray1::from_slice(py, data).reshape([m, m])
}

/// The maxvol active-set matrix A (m x m) with its running inverse.
///
/// Rows are parameter gradients of configurations (or atoms) identified by
/// non-negative integer ids; unit rows (id -1) fill A until data replaces
/// them. ``maxvol`` swaps candidate rows in while some |(B A^-1)_ij| > 1 + tol;
/// each swap updates A^-1 by Sherman-Morrison, and A is re-inverted from
/// scratch when the measured error exceeds ``refresh_tol``.
#[pyclass(module = "mmtp_rs._core", name = "ActiveMatrix")]
#[derive(Clone)]
pub struct PyActiveMatrix {
    inner: ActiveMatrix,
}

#[pymethods]
impl PyActiveMatrix {
    /// A = unit_value * I of size m.
    #[new]
    #[pyo3(signature = (m, unit_value=1.0))]
    fn new(m: usize, unit_value: f64) -> PyResult<Self> {
        Ok(PyActiveMatrix { inner: ActiveMatrix::identity(m, unit_value).map_err(to_py)? })
    }

    /// Restore from the rows of A (m x m) and their ids (-1: unit row); A^-1 is recomputed.
    #[staticmethod]
    #[pyo3(signature = (a, ids, unit_value=1.0))]
    fn from_rows(py: Python<'_>, a: PyReadonlyArray2<f64>, ids: PyReadonlyArray1<i64>, unit_value: f64) -> PyResult<Self> {
        let v = a.as_array();
        let m = v.shape()[0];
        if v.shape()[1] != m {
            return Err(ShapeError::new_err(format!("A must be square, got shape {:?}", v.shape())));
        }
        let data: Vec<f64> = v.iter().copied().collect();
        let ids = ids.as_array().to_vec();
        let inner = py
            .detach(|| threads::install(|| ActiveMatrix::from_rows(m, data, ids, unit_value)))
            .map_err(to_py)?;
        Ok(PyActiveMatrix { inner })
    }

    /// Number of rows and columns.
    #[getter]
    fn m(&self) -> usize {
        self.inner.m()
    }

    /// Diagonal value of unit rows.
    #[getter]
    fn unit_value(&self) -> f64 {
        self.inner.unit_value()
    }

    /// A copy of A.
    #[getter]
    fn matrix<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        square(py, self.inner.matrix(), self.inner.m())
    }

    /// A copy of the running inverse of A.
    #[getter]
    fn inverse<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        square(py, self.inner.inverse(), self.inner.m())
    }

    /// Row ids (-1: unit row).
    #[getter]
    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.inner.ids().to_vec().into_pyarray(py)
    }

    /// Re-invert when the measured relative error of A^-1 exceeds this.
    #[getter]
    fn get_refresh_tol(&self) -> f64 {
        self.inner.refresh_tol
    }

    #[setter]
    fn set_refresh_tol(&mut self, v: f64) -> PyResult<()> {
        if v.is_nan() || v < 0.0 {
            return Err(InvalidValueError::new_err(format!("refresh_tol must be >= 0, got {v}")));
        }
        self.inner.refresh_tol = v;
        Ok(())
    }

    /// Measure the error of A^-1 every this many swaps.
    #[getter]
    fn get_check_every(&self) -> usize {
        self.inner.check_every
    }

    #[setter]
    fn set_check_every(&mut self, v: usize) {
        self.inner.check_every = v.max(1);
    }

    /// Counters: n_swaps, n_refreshes, last_error, max_error, fresh_error (error right after the last re-inversion).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("n_swaps", s.n_swaps)?;
        d.set_item("n_refreshes", s.n_refreshes)?;
        d.set_item("last_error", s.last_error)?;
        d.set_item("max_error", s.max_error)?;
        d.set_item("fresh_error", self.inner.fresh_error())?;
        Ok(d)
    }

    /// Grades max_j |(b A^-1)_j| of the rows of b (K, m) and the argmax columns.
    fn grades<'py>(
        &self,
        py: Python<'py>,
        b: PyReadonlyArray2<f64>,
    ) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<usize>>)> {
        let (data, k) = rows_of(&b, self.inner.m(), "gradient rows")?;
        let inner = &self.inner;
        let (g, j) = py.detach(|| threads::install(|| inner.grades(&data, k))).map_err(to_py)?;
        Ok((g.into_pyarray(py), j.into_pyarray(py)))
    }

    /// C = b A^-1 for rows b (K, m).
    fn coefficients<'py>(&self, py: Python<'py>, b: PyReadonlyArray2<f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let m = self.inner.m();
        let (data, k) = rows_of(&b, m, "gradient rows")?;
        let inner = &self.inner;
        let c = py.detach(|| threads::install(|| inner.coefficients(&data, k))).map_err(to_py)?;
        PyArray1::from_vec(py, c).reshape([k, m])
    }

    /// Swap candidate rows b (K, m) with ids (K,) into A until every
    /// |(b A^-1)_ij| <= 1 + tol. ``groups`` (K,) with ``max_groups`` caps the
    /// number of distinct groups holding rows of A. Returns a report dict.
    #[pyo3(signature = (b, ids, groups=None, tol=1e-3, max_groups=None, max_swaps=None, greedy_init=true))]
    #[allow(clippy::too_many_arguments)]
    fn maxvol<'py>(
        &mut self,
        py: Python<'py>,
        b: PyReadonlyArray2<f64>,
        ids: PyReadonlyArray1<i64>,
        groups: Option<PyReadonlyArray1<i64>>,
        tol: f64,
        max_groups: Option<usize>,
        max_swaps: Option<usize>,
        greedy_init: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (data, k) = rows_of(&b, self.inner.m(), "candidate rows")?;
        let ids = ids.as_array().to_vec();
        let groups = groups.map(|g| g.as_array().to_vec());
        let opts = MaxvolOptions { tol, max_groups, max_swaps, greedy_init, lazy_rows: true };
        let inner = &mut self.inner;
        let rep = py
            .detach(|| threads::install(|| inner.maxvol(&data, k, &ids, groups.as_deref(), &opts)))
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("n_pivots", rep.n_pivots)?;
        d.set_item("n_swaps", rep.n_swaps)?;
        d.set_item("n_refreshes", rep.n_refreshes)?;
        d.set_item("grade_drift", rep.grade_drift)?;
        d.set_item("det_factors", rep.det_factors.into_pyarray(py))?;
        d.set_item("max_grade", rep.max_grade)?;
        d.set_item("converged", rep.converged)?;
        d.set_item("stagnated", rep.stagnated)?;
        Ok(d)
    }

    /// Replace row j by ``row`` (id ``id``) with a Sherman-Morrison update;
    /// returns (c_j, refreshed): |det A| is multiplied by |c_j|.
    fn swap(&mut self, py: Python<'_>, j: usize, row: PyReadonlyArray1<f64>, id: i64) -> PyResult<(f64, bool)> {
        let r = row.as_array().to_vec();
        let inner = &mut self.inner;
        py.detach(|| threads::install(|| inner.swap(j, &r, id))).map_err(to_py)
    }

    /// log |det A| from a fresh LU factorisation.
    fn log_abs_det(&self, py: Python<'_>) -> PyResult<f64> {
        let inner = &self.inner;
        py.detach(|| threads::install(|| inner.log_abs_det())).map_err(to_py)
    }

    /// Relative error of the running inverse, |X (A p) - p| / |p| for a fixed probe p.
    fn inverse_error(&self, py: Python<'_>) -> f64 {
        let inner = &self.inner;
        py.detach(|| inner.inverse_error())
    }

    /// Re-invert A from scratch.
    fn refresh(&mut self, py: Python<'_>) -> PyResult<()> {
        let inner = &mut self.inner;
        py.detach(|| threads::install(|| inner.refresh())).map_err(to_py)
    }

    /// An independent copy.
    fn copy(&self) -> Self {
        self.clone()
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "ActiveMatrix is not picklable; save the ActiveSet with ActiveSet.save instead",
        ))
    }
}

/// Add the maxvol classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyActiveMatrix>()?;
    Ok(())
}
