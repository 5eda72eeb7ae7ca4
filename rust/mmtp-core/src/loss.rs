//! The training objective and its exact gradient, streamed configuration by
//! configuration (no Jacobian in memory), in parallel over configurations.
//!
//! For configuration k (paper eq. 5, with optional per-atom energies):
//! `L_k = w_e dE^2 + w_f sum_i |dF_i|^2 + w_s sum_ab (V dsigma_ab)^2 + w_t sum_i dT_i^2`
//! (d = model - reference; the stress residual is taken as `V dsigma`, in eV,
//! like MLIP's PlusStress; the sum runs over all nine Cartesian components).
//! Its gradient is `2 w_e dE dE/dtheta` plus the derivative of dE/dtheta
//! along one direction in configuration space,
//! `dpos = -2 w_f dF`, `dmom = -2 w_t dT`, `strain = 2 w_s V dsigma`,
//! computed exactly with dual numbers.

use crate::error::{MmtpError, Result};
use crate::model::{Config, EvalOptions, Potential};
use crate::neighbors::{self, NeighborList};
use rayon::prelude::*;

/// Reference labels of one configuration; `None` = not available.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    /// Total energy (eV).
    pub energy: Option<f64>,
    /// Forces (eV/Å).
    pub forces: Option<Vec<[f64; 3]>>,
    /// Stress, Voigt xx yy zz yz xz xy, ASE sign (eV/Å^3).
    pub stress: Option<[f64; 6]>,
    /// Magnetic forces -dE/dm (eV/μB).
    pub magnetic_forces: Option<Vec<f64>>,
}

/// Weights of the objective.
#[derive(Clone, Copy, Debug)]
pub struct LossWeights {
    /// w_e (1/eV^2 scale; applies to E, or E/N with `energy_per_atom`).
    pub energy: f64,
    /// w_f (Å^2/eV^2 scale).
    pub forces: f64,
    /// w_s (applies to V dsigma, eV).
    pub stress: f64,
    /// w_t (μB^2/eV^2 scale).
    pub magnetic: f64,
    /// Fit E/N instead of E.
    pub energy_per_atom: bool,
}

/// A training set with its neighbour lists, built once.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Configurations.
    pub configs: Vec<Config>,
    /// Their labels.
    pub labels: Vec<Labels>,
    /// Neighbour lists at `cutoff`.
    pub nls: Vec<NeighborList>,
    /// Cutoff of the neighbour lists (Å).
    pub cutoff: f64,
}

/// Value of the objective and its parts.
#[derive(Clone, Debug, Default)]
pub struct LossOut {
    /// Sum over configurations of L_k.
    pub loss: f64,
    /// dL/dtheta (empty unless requested).
    pub grad: Vec<f64>,
    /// Sums of squared residuals: energy (per the energy mode), force
    /// components, stress components (GPa-free, eV/Å^3), magnetic forces.
    pub sse: [f64; 4],
    /// Number of residual components in each sum.
    pub count: [usize; 4],
}

impl LossOut {
    fn add(&mut self, o: &LossOut) {
        self.loss += o.loss;
        for t in 0..4 {
            self.sse[t] += o.sse[t];
            self.count[t] += o.count[t];
        }
        for (a, b) in self.grad.iter_mut().zip(&o.grad) {
            *a += b;
        }
    }
}

impl Dataset {
    /// Check the labels against the configurations and build the neighbour lists.
    pub fn new(configs: Vec<Config>, labels: Vec<Labels>, cutoff: f64) -> Result<Self> {
        if configs.len() != labels.len() {
            return Err(MmtpError::Shape(format!(
                "{} configurations but {} label sets",
                configs.len(),
                labels.len()
            )));
        }
        for (k, (c, l)) in configs.iter().zip(&labels).enumerate() {
            let n = c.positions.len();
            let bad = |what: &str| MmtpError::Value(format!("configuration {k}: {what}"));
            if c.types.len() != n || c.moments.len() != n {
                return Err(MmtpError::Shape(format!("configuration {k}: {n} positions, {} types, {} moments", c.types.len(), c.moments.len())));
            }
            if let Some(e) = l.energy {
                if !e.is_finite() {
                    return Err(bad(&format!("reference energy is {e}")));
                }
            }
            if let Some(f) = &l.forces {
                if f.len() != n {
                    return Err(MmtpError::Shape(format!("configuration {k}: {} reference forces for {n} atoms", f.len())));
                }
                if let Some(i) = f.iter().position(|x| x.iter().any(|v| !v.is_finite())) {
                    return Err(bad(&format!("reference force of atom {i} is not finite")));
                }
            }
            if let Some(t) = &l.magnetic_forces {
                if t.len() != n {
                    return Err(MmtpError::Shape(format!("configuration {k}: {} reference magnetic forces for {n} atoms", t.len())));
                }
                if let Some(i) = t.iter().position(|v| !v.is_finite()) {
                    return Err(bad(&format!("reference magnetic force of atom {i} is not finite")));
                }
            }
            if let Some(s) = &l.stress {
                if s.iter().any(|v| !v.is_finite()) {
                    return Err(bad("reference stress is not finite"));
                }
                if c.pbc != [true; 3] {
                    return Err(bad("a stress label needs a cell periodic in all three directions"));
                }
            }
        }
        let nls: Vec<Result<NeighborList>> = configs
            .par_iter()
            .map(|c| neighbors::build(&c.lattice, c.pbc, &c.positions, cutoff))
            .collect();
        let mut out = Vec::with_capacity(nls.len());
        for (k, nl) in nls.into_iter().enumerate() {
            out.push(nl.map_err(|e| MmtpError::Geometry(format!("configuration {k}: {e}")))?);
        }
        Ok(Dataset { configs, labels, nls: out, cutoff })
    }

    /// Number of configurations.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }
}

fn voigt_to_matrix(s: &[f64; 6]) -> [[f64; 3]; 3] {
    [[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]]
}

fn volume(l: &[[f64; 3]; 3]) -> f64 {
    crate::neighbors::volume(l)
}

/// Objective (and optionally its gradient) of `pot` over a subset of the dataset.
pub fn loss(
    pot: &Potential,
    data: &Dataset,
    subset: Option<&[usize]>,
    w: LossWeights,
    symmetrize: bool,
    want_grad: bool,
) -> Result<LossOut> {
    if (data.cutoff - pot.max_dist).abs() > 1e-12 {
        return Err(MmtpError::Value(format!(
            "the dataset's neighbour lists were built for a cutoff of {} Å, the potential has {} Å",
            data.cutoff, pot.max_dist
        )));
    }
    let all: Vec<usize>;
    let idx: &[usize] = match subset {
        Some(s) => s,
        None => {
            all = (0..data.len()).collect();
            &all
        }
    };
    for &k in idx {
        if k >= data.len() {
            return Err(MmtpError::Value(format!("configuration index {k} beyond the dataset's {}", data.len())));
        }
        pot.check_config(&data.configs[k]).map_err(|e| MmtpError::Value(format!("configuration {k}: {e}")))?;
    }
    let np = if want_grad { pot.n_params() } else { 0 };
    // fixed chunks combined in a fixed order: bit-identical at any thread count
    let out = crate::threads::ordered_reduce(
        idx.len(),
        crate::threads::chunk_len(idx.len(), 1, 64),
        &|| LossOut { grad: vec![0.0; np], ..Default::default() },
        &|acc: &mut LossOut, t| {
            let k = idx[t];
            acc.add(&one(pot, &data.configs[k], &data.labels[k], &data.nls[k], w, symmetrize, want_grad));
        },
        &|acc: &mut LossOut, o| acc.add(&o),
    );
    if !out.loss.is_finite() {
        return Err(MmtpError::Value(format!(
            "the objective is not finite ({}): the parameters produce overflowing energies",
            out.loss
        )));
    }
    if let Some(k) = out.grad.iter().position(|x| !x.is_finite()) {
        return Err(MmtpError::Value(format!(
            "component {k} of the objective's gradient is not finite: the parameters produce overflowing derivatives"
        )));
    }
    Ok(out)
}

fn one(
    pot: &Potential,
    cfg: &Config,
    lab: &Labels,
    nl: &NeighborList,
    w: LossWeights,
    symmetrize: bool,
    want_grad: bool,
) -> LossOut {
    let n = cfg.positions.len();
    let need_forces = lab.forces.is_some() || lab.stress.is_some() || lab.magnetic_forces.is_some();
    let opts = EvalOptions { symmetrize, param_grad: want_grad && !need_forces, forces: need_forces };
    let out = pot.evaluate_with(cfg, nl, opts);
    let mut res = LossOut::default();
    let nf = n.max(1) as f64;
    // energy
    let mut de_coef = 0.0;
    if let Some(e0) = lab.energy {
        let (d, scale) = if w.energy_per_atom { ((out.energy - e0) / nf, 1.0 / nf) } else { (out.energy - e0, 1.0) };
        res.sse[0] += d * d;
        res.count[0] += 1;
        res.loss += w.energy * d * d;
        de_coef = 2.0 * w.energy * d * scale;
    }
    let mut dpos = vec![[0.0; 3]; if want_grad { n } else { 0 }];
    let mut dmom = vec![0.0; if want_grad { n } else { 0 }];
    let mut strain = [[0.0; 3]; 3];
    if let Some(f0) = &lab.forces {
        for i in 0..n {
            for a in 0..3 {
                let d = out.forces[i][a] - f0[i][a];
                res.sse[1] += d * d;
                res.loss += w.forces * d * d;
                if want_grad {
                    dpos[i][a] = -2.0 * w.forces * d;
                }
            }
        }
        res.count[1] += 3 * n;
    }
    if let Some(t0) = &lab.magnetic_forces {
        for i in 0..n {
            let d = -out.dedm[i] - t0[i];
            res.sse[3] += d * d;
            res.loss += w.magnetic * d * d;
            if want_grad {
                dmom[i] = -2.0 * w.magnetic * d;
            }
        }
        res.count[3] += n;
    }
    if let Some(s0) = &lab.stress {
        let v = volume(&cfg.lattice);
        let s0 = voigt_to_matrix(s0);
        for a in 0..3 {
            for b in 0..3 {
                let sym = 0.5 * (out.virial[a][b] + out.virial[b][a]);
                let sigma = -sym / v;
                let d = sigma - s0[a][b];
                res.sse[2] += if a <= b { d * d } else { 0.0 };
                res.loss += w.stress * (v * d) * (v * d);
                strain[a][b] = 2.0 * w.stress * v * d;
            }
        }
        res.count[2] += 6;
    }
    if want_grad {
        if need_forces {
            let (_, g, dg) = pot.param_grad_directional(cfg, nl, symmetrize, &dpos, &dmom, &strain);
            res.grad = g.iter().zip(&dg).map(|(a, b)| de_coef * a + b).collect();
        } else {
            res.grad = out.param_grad.iter().map(|a| de_coef * a).collect();
        }
    }
    res
}
