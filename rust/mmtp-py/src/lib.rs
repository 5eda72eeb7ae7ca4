//! PyO3 bindings of mmtp-core: shapes are checked here, inputs copied into
//! owned data, and the heavy work runs with the GIL released inside the core's
//! thread pool.

use mmtp_core::loss::{self, Dataset, Labels, LossWeights};
use mmtp_core::{model, neighbors, threads, Config, EvalOptions, MmtpError, Output, Potential, Tables};
use std::sync::Arc;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Large blocks (neighbour lists, accumulators of big cells) are kept for
/// reuse instead of going back to the kernel after every call; see `mmtp_core::alloc`.
#[global_allocator]
static ALLOC: mmtp_core::alloc::LargeBlockCache = mmtp_core::alloc::LargeBlockCache;

mod maxvol_py;
mod spin_mc_py;

create_exception!(_core, MMTPError, PyValueError, "Invalid input to an mMTP computation.");
create_exception!(_core, ShapeError, MMTPError, "An input array or table has the wrong size.");
create_exception!(_core, InvalidValueError, MMTPError, "A value is NaN, infinite or out of its allowed range.");
create_exception!(_core, GeometryError, MMTPError,
                  "The geometry cannot be evaluated (coinciding atoms, degenerate or absurd cell).");
create_exception!(_core, PotentialError, MMTPError, "The potential definition is inconsistent.");

/// Each core error variant becomes its own Python exception, all subclasses of MMTPError.
fn to_py(e: MmtpError) -> PyErr {
    let msg = e.to_string();
    match e {
        MmtpError::Shape(_) => ShapeError::new_err(msg),
        MmtpError::Value(_) => InvalidValueError::new_err(msg),
        MmtpError::Geometry(_) => GeometryError::new_err(msg),
        MmtpError::Potential(_) => PotentialError::new_err(msg),
    }
}

/// The same exception class as ``e`` with ``prefix: `` in front of its message.
fn with_context(py: Python<'_>, e: PyErr, prefix: &str) -> PyErr {
    PyErr::from_type(e.get_type(py), format!("{prefix}: {}", e.value(py)))
}

fn mat3(a: &PyReadonlyArray2<f64>, what: &str) -> PyResult<[[f64; 3]; 3]> {
    let v = a.as_array();
    if v.shape() != [3, 3] {
        return Err(ShapeError::new_err(format!("{what} must have shape (3, 3), got {:?}", v.shape())));
    }
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = v[[r, c]];
        }
    }
    Ok(m)
}

fn rows3(a: &PyReadonlyArray2<f64>, what: &str) -> PyResult<Vec<[f64; 3]>> {
    let v = a.as_array();
    if v.ndim() != 2 || v.shape()[1] != 3 {
        return Err(ShapeError::new_err(format!("{what} must have shape (N, 3), got {:?}", v.shape())));
    }
    Ok(v.rows().into_iter().map(|r| [r[0], r[1], r[2]]).collect())
}

fn make_config(
    lattice: PyReadonlyArray2<f64>,
    pbc: [bool; 3],
    positions: PyReadonlyArray2<f64>,
    types: PyReadonlyArray1<i64>,
    moments: PyReadonlyArray1<f64>,
) -> PyResult<Config> {
    let lattice = mat3(&lattice, "cell")?;
    let positions = rows3(&positions, "positions")?;
    let t = types.as_array();
    let mut tv = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if x < 0 {
            return Err(InvalidValueError::new_err(format!("atom {i} has a negative species index {x}")));
        }
        tv.push(x as usize);
    }
    Ok(Config { lattice, pbc, positions, types: tv, moments: moments.as_array().to_vec() })
}

/// One configuration as passed from Python: (cell, pbc, positions, types, moments).
type PyConfig<'py> = (
    PyReadonlyArray2<'py, f64>,
    [bool; 3],
    PyReadonlyArray2<'py, f64>,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, f64>,
);

/// Convert a list of configurations, naming the index of a bad one.
fn make_configs<'py>(py: Python<'py>, configs: Vec<PyConfig<'py>>) -> PyResult<Vec<Config>> {
    configs
        .into_iter()
        .enumerate()
        .map(|(k, (c, p, x, t, m))| {
            make_config(c, p, x, t, m)
                .map_err(|e| with_context(py, e, &format!("configuration {k}")))
        })
        .collect()
}

fn output_dict<'py>(py: Python<'py>, out: Output, forces: bool) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let n = out.forces.len();
    d.set_item("energy", out.energy)?;
    d.set_item("energies", out.site_energies.into_pyarray(py))?;
    d.set_item("n_close_atoms", out.n_close_atoms)?;
    d.set_item("n_moments_outside", out.n_moments_outside)?;
    d.set_item("n_pairs", out.n_pairs)?;
    if !out.param_grad.is_empty() {
        d.set_item("param_gradient", out.param_grad.into_pyarray(py))?;
    }
    if !forces {
        return Ok(d);
    }
    let flat: Vec<f64> = out.forces.iter().flat_map(|f| f.iter().copied()).collect();
    let forces = PyArray1::from_vec(py, flat).reshape([n, 3])?;
    d.set_item("forces", forces)?;
    let vir: Vec<f64> = out.virial.iter().flat_map(|r| r.iter().copied()).collect();
    d.set_item("virial", PyArray1::from_vec(py, vir).reshape([3, 3])?)?;
    d.set_item("dedm", out.dedm.into_pyarray(py))?;
    Ok(d)
}

/// The compiled mMTP: basis tables, hyperparameters and parameters.
#[pyclass(module = "mmtp_rs._core")]
#[derive(Clone)]
struct CorePotential {
    inner: Potential,
}

#[pymethods]
impl CorePotential {
    /// Build from hyperparameters, MLIP-style basis tables and a parameter vector.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (n_species, scaling, min_dist, max_dist, n_phi, n_psi, mag_lo, mag_hi, basic, times, n_moments, scalars, params))]
    fn new(
        n_species: usize,
        scaling: f64,
        min_dist: f64,
        max_dist: f64,
        n_phi: usize,
        n_psi: usize,
        mag_lo: Vec<f64>,
        mag_hi: Vec<f64>,
        basic: Vec<[usize; 4]>,
        times: Vec<(usize, usize, f64, usize)>,
        n_moments: usize,
        scalars: Vec<usize>,
        params: PyReadonlyArray1<f64>,
    ) -> PyResult<Self> {
        let tables = Tables { basic, times, n_moments, scalars };
        let inner = Potential::new(
            n_species, scaling, min_dist, max_dist, n_phi, n_psi, mag_lo, mag_hi, tables,
            params.as_array().to_vec(),
        )
        .map_err(to_py)?;
        Ok(CorePotential { inner })
    }

    /// Number of parameters.
    #[getter]
    fn n_params(&self) -> usize {
        self.inner.n_params()
    }

    /// Number of radial functions.
    #[getter]
    fn n_radial(&self) -> usize {
        self.inner.n_radial
    }

    /// Number of radial coefficients (the first block of the parameter vector).
    #[getter]
    fn n_radial_coeffs(&self) -> usize {
        self.inner.n_radial_coeffs()
    }

    /// A copy of the parameter vector.
    fn get_params<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.params().to_vec().into_pyarray(py)
    }

    /// Replace the parameter vector.
    fn set_params(&mut self, params: PyReadonlyArray1<f64>) -> PyResult<()> {
        self.inner.set_params(params.as_array().to_vec()).map_err(to_py)
    }

    /// Evaluate one configuration; returns a dict of numpy arrays.
    #[pyo3(signature = (cell, pbc, positions, types, moments, symmetrize=true, param_grad=true, forces=true, site_param_grad=false))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        cell: PyReadonlyArray2<f64>,
        pbc: [bool; 3],
        positions: PyReadonlyArray2<f64>,
        types: PyReadonlyArray1<i64>,
        moments: PyReadonlyArray1<f64>,
        symmetrize: bool,
        param_grad: bool,
        forces: bool,
        site_param_grad: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let cfg = make_config(cell, pbc, positions, types, moments)?;
        let opts = EvalOptions { symmetrize, param_grad, forces };
        let pot = &self.inner;
        let (out, rows) = py
            .detach(|| {
                threads::install(|| pot.evaluate_checked(&cfg, opts, site_param_grad))
            })
            .map_err(to_py)?;
        let n = cfg.positions.len();
        let d = output_dict(py, out, forces)?;
        if let Some(rows) = rows {
            let np = pot.n_params();
            d.set_item("site_param_gradient", PyArray1::from_vec(py, rows).reshape([n, np])?)?;
        }
        Ok(d)
    }

    /// Evaluate many configurations in parallel: `configs` is a list of
    /// (cell, pbc, positions, types, moments) tuples; returns a list of dicts.
    #[pyo3(signature = (configs, symmetrize=true, param_grad=false, forces=true, site_param_grad=false))]
    #[allow(clippy::type_complexity)]
    fn evaluate_many<'py>(
        &self,
        py: Python<'py>,
        configs: Vec<PyConfig<'py>>,
        symmetrize: bool,
        param_grad: bool,
        forces: bool,
        site_param_grad: bool,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let cfgs = make_configs(py, configs)?;
        let opts = EvalOptions { symmetrize, param_grad, forces };
        let pot = &self.inner;
        let outs: Vec<Result<(Output, Option<Vec<f64>>), MmtpError>> = py.detach(|| {
            threads::install(|| {
                use rayon::prelude::*;
                cfgs.par_iter().map(|cfg| pot.evaluate_checked(cfg, opts, site_param_grad)).collect()
            })
        });
        let np = pot.n_params();
        let mut res = Vec::with_capacity(outs.len());
        for (k, (o, cfg)) in outs.into_iter().zip(&cfgs).enumerate() {
            let (o, rows) = o.map_err(|e| with_context(py, to_py(e), &format!("configuration {k}")))?;
            let d = output_dict(py, o, forces)?;
            if let Some(rows) = rows {
                d.set_item("site_param_gradient", PyArray1::from_vec(py, rows).reshape([cfg.positions.len(), np])?)?;
            }
            res.push(d);
        }
        Ok(res)
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "CorePotential is not picklable; save the mmtp_rs.Potential to a file instead",
        ))
    }

    /// Training objective over a dataset (optionally a subset of its
    /// configurations) and, with `gradient=True`, its exact gradient.
    /// `weights` = (w_e, w_f, w_s, w_t). Returns a dict with `loss`,
    /// `gradient`, `sse` (energy, force, stress, magnetic-force sums of squared
    /// residuals) and `count` (number of residual components of each).
    #[pyo3(signature = (dataset, weights, energy_per_atom=false, symmetrize=true, gradient=true, subset=None))]
    #[allow(clippy::too_many_arguments)]
    fn loss<'py>(
        &self,
        py: Python<'py>,
        dataset: &CoreDataset,
        weights: (f64, f64, f64, f64),
        energy_per_atom: bool,
        symmetrize: bool,
        gradient: bool,
        subset: Option<Vec<usize>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (we, wf, ws, wt) = weights;
        for (name, v) in [("w_e", we), ("w_f", wf), ("w_s", ws), ("w_t", wt)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(InvalidValueError::new_err(format!("weight {name} must be finite and >= 0, got {v}")));
            }
        }
        let w = LossWeights { energy: we, forces: wf, stress: ws, magnetic: wt, energy_per_atom };
        let pot = &self.inner;
        let data = dataset.inner.clone();
        let out = py
            .detach(|| threads::install(|| loss::loss(pot, &data, subset.as_deref(), w, symmetrize, gradient)))
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("loss", out.loss)?;
        if gradient {
            d.set_item("gradient", out.grad.into_pyarray(py))?;
        }
        d.set_item("sse", out.sse.to_vec())?;
        d.set_item("count", out.count.to_vec())?;
        Ok(d)
    }
}

/// A training set held in Rust with its neighbour lists (built once).
#[pyclass(module = "mmtp_rs._core")]
struct CoreDataset {
    inner: Arc<Dataset>,
}

type PyLabels<'py> = (
    Option<f64>,
    Option<PyReadonlyArray2<'py, f64>>,
    Option<PyReadonlyArray1<'py, f64>>,
    Option<PyReadonlyArray1<'py, f64>>,
);

#[pymethods]
impl CoreDataset {
    /// `configs`: list of (cell, pbc, positions, types, moments); `labels`:
    /// list of (energy or None, forces (N,3) or None, stress (6,) or None,
    /// magnetic_forces (N,) or None); `cutoff`: the potential's R_cut.
    #[new]
    #[allow(clippy::type_complexity)]
    fn new<'py>(
        py: Python<'py>,
        configs: Vec<PyConfig<'py>>,
        labels: Vec<PyLabels<'py>>,
        cutoff: f64,
    ) -> PyResult<Self> {
        let cfgs = make_configs(py, configs)?;
        let mut labs = Vec::with_capacity(labels.len());
        for (k, (e, f, s, t)) in labels.into_iter().enumerate() {
            let forces = match f {
                Some(f) => Some(
                    rows3(&f, "reference forces").map_err(|e| with_context(py, e, &format!("configuration {k}")))?,
                ),
                None => None,
            };
            let stress = match s {
                Some(s) => {
                    let v = s.as_array();
                    if v.len() != 6 {
                        return Err(ShapeError::new_err(format!(
                            "configuration {k}: reference stress must have 6 Voigt components, got {}",
                            v.len()
                        )));
                    }
                    Some([v[0], v[1], v[2], v[3], v[4], v[5]])
                }
                None => None,
            };
            labs.push(Labels { energy: e, forces, stress, magnetic_forces: t.map(|t| t.as_array().to_vec()) });
        }
        let data = py
            .detach(|| threads::install(|| Dataset::new(cfgs, labs, cutoff)))
            .map_err(to_py)?;
        Ok(CoreDataset { inner: Arc::new(data) })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Cutoff of the stored neighbour lists (Å).
    #[getter]
    fn cutoff(&self) -> f64 {
        self.inner.cutoff
    }

    /// Number of atoms of each configuration.
    fn n_atoms(&self) -> Vec<usize> {
        self.inner.configs.iter().map(|c| c.positions.len()).collect()
    }

    /// Total number of ordered neighbour pairs stored.
    fn n_pairs(&self) -> usize {
        self.inner.nls.iter().map(|n| n.n_pairs()).sum()
    }
}

/// Full neighbour list within `cutoff`: (offsets (N+1), index (P), vectors (P, 3)).
#[pyfunction]
fn neighbor_list<'py>(
    py: Python<'py>,
    cell: PyReadonlyArray2<f64>,
    pbc: [bool; 3],
    positions: PyReadonlyArray2<f64>,
    cutoff: f64,
) -> PyResult<(Bound<'py, PyArray1<usize>>, Bound<'py, PyArray1<usize>>, Bound<'py, PyArray2<f64>>)> {
    let lat = mat3(&cell, "cell")?;
    let pos = rows3(&positions, "positions")?;
    let nl = py
        .detach(|| threads::install(|| neighbors::build(&lat, pbc, &pos, cutoff)))
        .map_err(to_py)?;
    let p = nl.vec.len();
    // the same buffer viewed as p x 3 numbers (no copy)
    let flat: Vec<f64> = nl.vec.into_flattened();
    Ok((
        nl.offsets.into_pyarray(py),
        nl.index.into_pyarray(py),
        PyArray1::from_vec(py, flat).reshape([p, 3])?,
    ))
}

/// Basis tables of an MTP level: dict with basic, times, n_moments, scalars, n_radial.
#[pyfunction]
fn generate_basis<'py>(py: Python<'py>, level: usize) -> PyResult<Bound<'py, PyDict>> {
    let t = mmtp_core::basis_gen::generate(level).map_err(InvalidValueError::new_err)?;
    let d = PyDict::new(py);
    d.set_item("basic", t.basic.clone())?;
    let times: Vec<(usize, usize, f64, usize)> = t.times.iter().map(|&(i, j, m, k)| (i, j, m as f64, k)).collect();
    d.set_item("times", times)?;
    d.set_item("n_moments", t.n_moments)?;
    d.set_item("scalars", t.scalars.clone())?;
    d.set_item("n_radial", t.n_radial)?;
    Ok(d)
}

/// Set the number of worker threads (>= 1).
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(PyValueError::new_err("the number of threads must be at least 1"));
    }
    threads::set_num_threads(n);
    Ok(())
}

/// Number of worker threads used by the next computation.
#[pyfunction]
fn get_num_threads() -> usize {
    threads::num_threads()
}

/// Return the large freed blocks the extension keeps for reuse to the
/// system; the number of bytes released.
#[pyfunction]
fn release_memory() -> usize {
    mmtp_core::alloc::release_cached()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    maxvol_py::register(m)?;
    spin_mc_py::register(m)?;
    m.add_class::<CorePotential>()?;
    m.add_class::<CoreDataset>()?;
    m.add_function(wrap_pyfunction!(neighbor_list, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(release_memory, m)?)?;
    m.add_function(wrap_pyfunction!(generate_basis, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add("MMTPError", m.py().get_type::<MMTPError>())?;
    m.add("ShapeError", m.py().get_type::<ShapeError>())?;
    m.add("InvalidValueError", m.py().get_type::<InvalidValueError>())?;
    m.add("GeometryError", m.py().get_type::<GeometryError>())?;
    m.add("PotentialError", m.py().get_type::<PotentialError>())?;
    let _ = model::Tables::n_radial; // keep the model module linked in docs
    Ok(())
}
