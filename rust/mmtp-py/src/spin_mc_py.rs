//! Bindings of the spin Monte-Carlo sampler (`mmtp_core::spin_mc`): the class
//! `mmtp_rs._core.SpinSampler`. Sweeps run with the GIL released.

use crate::{make_config, to_py, CorePotential};
use mmtp_core::spin_mc::{SpinSampler, SweepStats};
use mmtp_core::threads;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Metropolis sampler of collinear moments at fixed positions, with the
/// energy change of each move from the affected site energies only.
#[pyclass(module = "mmtp_rs._core", name = "SpinSampler")]
struct PySpinSampler {
    inner: SpinSampler,
}

fn stats_dict<'py>(py: Python<'py>, st: SweepStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("flips_tried", st.flips_tried)?;
    d.set_item("flips_accepted", st.flips_accepted)?;
    d.set_item("mags_tried", st.mags_tried)?;
    d.set_item("mags_accepted", st.mags_accepted)?;
    Ok(d)
}

#[pymethods]
impl PySpinSampler {
    /// Build for one configuration: `m_max` (N,) bounds each |moment| (0 = never moved).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (potential, cell, pbc, positions, types, moments, m_max, symmetrize=true, seed=0))]
    fn new(
        py: Python<'_>,
        potential: &CorePotential,
        cell: PyReadonlyArray2<f64>,
        pbc: [bool; 3],
        positions: PyReadonlyArray2<f64>,
        types: PyReadonlyArray1<i64>,
        moments: PyReadonlyArray1<f64>,
        m_max: PyReadonlyArray1<f64>,
        symmetrize: bool,
        seed: u64,
    ) -> PyResult<Self> {
        let cfg = make_config(cell, pbc, positions, types, moments)?;
        let mmax = m_max.as_array().to_vec();
        let pot = &potential.inner;
        let inner = py
            .detach(|| threads::install(|| SpinSampler::new(pot, &cfg, &mmax, symmetrize, seed)))
            .map_err(to_py)?;
        Ok(PySpinSampler { inner })
    }

    /// Total energy of the current moments (eV).
    #[getter]
    fn energy(&self) -> f64 {
        self.inner.energy()
    }

    /// Current moments (μB), a copy.
    #[getter]
    fn moments<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.moments().to_vec().into_pyarray(py)
    }

    /// Bound of each atom's |moment| (μB; 0: never moved), a copy.
    #[getter]
    fn m_max<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.m_max().to_vec().into_pyarray(py)
    }

    /// Current site energies (eV), a copy.
    #[getter]
    fn site_energies<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.site_energies().to_vec().into_pyarray(py)
    }

    /// Number of atoms whose site energy depends on the moment of atom i (i included).
    fn n_affected(&self, i: usize) -> PyResult<usize> {
        if i >= self.inner.n_atoms() {
            return Err(crate::InvalidValueError::new_err(format!("atom index {i} is out of range")));
        }
        Ok(self.inner.n_affected(i))
    }

    /// Energy change (eV) of setting the moment of atom i to new_m (nothing changes).
    fn delta_energy(&mut self, i: usize, new_m: f64) -> PyResult<f64> {
        let inner = &mut self.inner;
        threads::install(|| inner.delta_energy(i, new_m)).map_err(to_py)
    }

    /// Set the moment of atom i unconditionally.
    fn set_moment(&mut self, i: usize, new_m: f64) -> PyResult<()> {
        let inner = &mut self.inner;
        threads::install(|| inner.set_moment(i, new_m)).map_err(to_py)
    }

    /// One Metropolis attempt on atom i; returns (accepted, flip, delta_e, moment).
    fn attempt(&mut self, i: usize, beta: f64, p_flip: f64, step: f64) -> PyResult<(bool, bool, f64, f64)> {
        let inner = &mut self.inner;
        let r = threads::install(|| inner.attempt(i, beta, p_flip, step)).map_err(to_py)?;
        Ok((r.accepted, r.flip, r.delta_e, r.moment))
    }

    /// n_sweeps sweeps over `sites` (all atoms if None); returns the move counts.
    #[pyo3(signature = (beta, p_flip=0.5, step=0.2, n_sweeps=1, sites=None))]
    fn sweep<'py>(
        &mut self,
        py: Python<'py>,
        beta: f64,
        p_flip: f64,
        step: f64,
        n_sweeps: usize,
        sites: Option<Vec<usize>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let inner = &mut self.inner;
        let st = py
            .detach(|| threads::install(|| inner.sweep(beta, p_flip, step, n_sweeps, sites.as_deref())))
            .map_err(to_py)?;
        stats_dict(py, st)
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err("SpinSampler is not picklable"))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySpinSampler>()?;
    Ok(())
}
