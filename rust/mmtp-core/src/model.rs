//! The magnetic Moment Tensor Potential: definition, parameters and exact
//! evaluation of energies, forces, virial, magnetic derivatives and the
//! gradient with respect to all parameters.
//!
//! Energy of a configuration (moments `m`, collinear and signed):
//! `E(M) = sum_i [ s_{z_i} + sum_a xi_a B_a(n_i) ]`, with moment tensors
//! `M_{mu,nu} = sum_j f_mu(r_ij, z_i, z_j, m_i, m_j) rhat_ij^{(x) nu}` and
//! `f_mu = sum_{zeta,beta,gamma} c phi_zeta(r) psi_beta(m_i) psi_gamma(m_j)`,
//! `phi_zeta(r) = scaling T_zeta(x) (R_cut - r)^2`,
//! `psi_beta(m) = T_beta((2 m - (lo_z + hi_z)) / (hi_z - lo_z))` with a
//! per-species interval `[lo_z, hi_z]` (MLIP-3 uses one interval for all
//! species; the paper's `T_beta(m / M_max^z)` is `[-M_max^z, M_max^z]`).
//! The spin-symmetrised energy is `(E(M) + E(-M)) / 2`.
//!
//! Parameter vector layout (`params`): radial coefficients first, in MLIP's
//! order `((z_i C + z_j) K + mu) P M^2 + zeta M^2 + beta M + gamma`, then the
//! species constants `s_z` (C), then the basis coefficients `xi` (one per
//! scalar basis function).

use crate::chebyshev::cheb_with_deriv;
use crate::error::{MmtpError, Result};
use crate::neighbors::{self, NeighborList};
use crate::num::{Dual, Num};
use crate::simd_available;
use rayon::prelude::*;

/// Limits on the size and range of a potential, checked before anything is
/// allocated (files are outside input). They are far beyond any potential
/// in use: level 28 has ~10^3 moments and ~10^4 parameters.
pub mod limits {
    /// Species (the periodic table has 118 elements).
    pub const MAX_SPECIES: usize = 128;
    /// Moments (basic + composite), basic moments and scalar basis functions.
    pub const MAX_MOMENTS: usize = 100_000;
    /// Entries of the `times` table.
    pub const MAX_TIMES: usize = 1_000_000;
    /// Chebyshev polynomials of the radial (N_phi) and magnetic (N_psi) bases.
    pub const MAX_BASIS_SIZE: usize = 64;
    /// Radial functions (mu < 64) and tensor rank of a basic moment.
    pub const MAX_RADIAL_FUNCS: usize = 64;
    /// Largest tensor rank a + b + c of a basic moment.
    pub const MAX_RANK: usize = 31;
    /// Total number of parameters.
    pub const MAX_PARAMS: usize = 10_000_000;
    /// Largest cutoff radius R_cut (Å); the neighbour count grows as R_cut^3.
    pub const MAX_CUTOFF: f64 = 20.0;
    /// Largest |value| of a real hyperparameter or parameter (scaling, coefficients,
    /// interval ends).
    pub const MAX_ABS_VALUE: f64 = 1e30;
    /// A moment beyond this multiple of its species' max(|lo|, |hi|) is rejected
    /// (moments just outside the interval are evaluated and counted).
    pub const MAX_MOMENT_FACTOR: f64 = 100.0;
}

/// Basis tables in MLIP's representation (see `basis_gen`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tables {
    /// Basic moments `(mu, a, b, c)`: one tensor component each.
    pub basic: Vec<[usize; 4]>,
    /// `moment[k] += mult * moment[i] * moment[j]`, as `(i, j, mult, k)`, in order.
    pub times: Vec<(usize, usize, f64, usize)>,
    /// Total number of moments (basic + composite).
    pub n_moments: usize,
    /// Indices of the scalar basis functions.
    pub scalars: Vec<usize>,
}

impl Tables {
    /// Check the internal consistency of the tables.
    pub fn validate(&self) -> Result<()> {
        let nb = self.basic.len();
        for (what, n, cap) in [
            ("alpha_moments_count", self.n_moments, limits::MAX_MOMENTS),
            ("alpha_index_basic_count", nb, limits::MAX_MOMENTS),
            ("alpha_index_times_count", self.times.len(), limits::MAX_TIMES),
            ("alpha_scalar_moments", self.scalars.len(), limits::MAX_MOMENTS),
        ] {
            if n > cap {
                return Err(MmtpError::Potential(format!("{what} = {n} exceeds the limit of {cap}")));
            }
        }
        if self.n_moments < nb {
            return Err(MmtpError::Potential(format!(
                "alpha_moments_count {} is smaller than alpha_index_basic_count {nb}",
                self.n_moments
            )));
        }
        for (k, b) in self.basic.iter().enumerate() {
            if b[0] >= limits::MAX_RADIAL_FUNCS || b[1..].iter().any(|&p| p > limits::MAX_RANK) || b[1] + b[2] + b[3] > limits::MAX_RANK {
                return Err(MmtpError::Potential(format!(
                    "alpha_index_basic entry {k} {b:?}: need mu < {} and a tensor rank of at most {}",
                    limits::MAX_RADIAL_FUNCS,
                    limits::MAX_RANK
                )));
            }
        }
        let mut done = vec![false; self.n_moments];
        for d in done.iter_mut().take(nb) {
            *d = true;
        }
        let mut last_k = nb;
        for (t, &(i, j, mult, k)) in self.times.iter().enumerate() {
            if i >= self.n_moments || j >= self.n_moments || k >= self.n_moments || k < nb {
                return Err(MmtpError::Potential(format!(
                    "alpha_index_times entry {t} ({i}, {j}, {mult}, {k}) refers to a moment out of range"
                )));
            }
            if !mult.is_finite() {
                return Err(MmtpError::Potential(format!("alpha_index_times entry {t} has a non-finite factor")));
            }
            if k != last_k {
                for kk in last_k..k.min(self.n_moments) {
                    done[kk] = true;
                }
                last_k = k;
            }
            if !done[i] || !done[j] || i >= k || j >= k {
                return Err(MmtpError::Potential(format!(
                    "alpha_index_times entry {t} uses moment {} before it is complete",
                    if !done[i] || i >= k { i } else { j }
                )));
            }
        }
        for (a, &s) in self.scalars.iter().enumerate() {
            if s >= self.n_moments {
                return Err(MmtpError::Potential(format!(
                    "alpha_moment_mapping entry {a} = {s} is beyond alpha_moments_count {}",
                    self.n_moments
                )));
            }
        }
        Ok(())
    }

    /// Number of radial functions used (largest mu + 1).
    pub fn n_radial(&self) -> usize {
        self.basic.iter().map(|b| b[0] + 1).max().unwrap_or(0)
    }
}

/// A magnetic (or, with `n_psi == 1`, ordinary) Moment Tensor Potential.
#[derive(Clone, Debug)]
pub struct Potential {
    /// Number of species C.
    pub n_species: usize,
    /// Factor on every radial function (MLIP's `scaling`).
    pub scaling: f64,
    /// R_min (Å).
    pub min_dist: f64,
    /// R_cut (Å).
    pub max_dist: f64,
    /// Number of radial Chebyshev polynomials N_phi.
    pub n_phi: usize,
    /// Number of magnetic Chebyshev polynomials N_psi (1 = non-magnetic).
    pub n_psi: usize,
    /// Lower end of the magnetic interval per species (μB).
    pub mag_lo: Vec<f64>,
    /// Upper end of the magnetic interval per species (μB).
    pub mag_hi: Vec<f64>,
    /// Basis tables.
    pub tables: Tables,
    /// Number of radial functions K.
    pub n_radial: usize,
    params: Vec<f64>,
    /// radial coefficients re-laid as [pair][zeta][mu, beta, gamma] for the kernel
    pub(crate) ct: Vec<f64>,
    pub(crate) layout: Layout,
}

/// How the basic moments are computed: the angular monomials of every degree
/// up to the largest used, in a canonical order, and the basic moments
/// grouped into blocks `(mu, first monomial, length)` that are contiguous in
/// both the monomial list and an internal ordering of the basic moments. When
/// every (mu, nu) group of the tables holds all components of degree nu (true
/// for MLIP's and our bases) the blocks are whole degrees and the inner loops
/// are contiguous; otherwise each basic moment is its own block.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) monos: Vec<[usize; 3]>,
    pub(crate) max_pow: usize,
    /// (mu, first monomial, length, first internal basic index)
    pub(crate) blocks: Vec<(usize, usize, usize, usize)>,
    /// internal basic index -> index in the tables
    pub(crate) perm: Vec<usize>,
    /// runs of the `times` table with one target moment: (k, first, end)
    pub(crate) runs: Vec<(usize, usize, usize)>,
}

impl Layout {
    fn new(basic: &[[usize; 4]]) -> Self {
        let max_deg = basic.iter().map(|b| b[1] + b[2] + b[3]).max().unwrap_or(0);
        let mut monos = Vec::new();
        let mut deg_start = Vec::new();
        for nu in 0..=max_deg {
            deg_start.push(monos.len());
            for a in (0..=nu).rev() {
                for b in (0..=nu - a).rev() {
                    monos.push([a, b, nu - a - b]);
                }
            }
        }
        let mono_index = |e: [usize; 3]| -> usize {
            let nu = e[0] + e[1] + e[2];
            // position within degree nu of (a, b, c) in the order above
            let a = e[0];
            let before: usize = (a + 1..=nu).map(|aa| nu - aa + 1).sum();
            deg_start[nu] + before + (nu - a - e[1])
        };
        // group by (mu, nu) and check completeness
        let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
        for (k, b) in basic.iter().enumerate() {
            let key = (b[0], b[1] + b[2] + b[3]);
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(k),
                None => groups.push((key, vec![k])),
            }
        }
        let complete = groups.iter().all(|((_, nu), ks)| {
            let mut seen = vec![false; (nu + 1) * (nu + 2) / 2];
            for &k in ks {
                let b = basic[k];
                let q = mono_index([b[1], b[2], b[3]]) - deg_start[*nu];
                if seen[q] {
                    return false;
                }
                seen[q] = true;
            }
            seen.iter().all(|x| *x)
        });
        let mut blocks = Vec::new();
        let mut perm = Vec::with_capacity(basic.len());
        if complete {
            groups.sort_by_key(|g| g.0);
            for ((mu, nu), ks) in &groups {
                let mut ks = ks.clone();
                ks.sort_by_key(|&k| mono_index([basic[k][1], basic[k][2], basic[k][3]]));
                let ms = deg_start[*nu];
                let bs = perm.len();
                // extend the previous block when it continues seamlessly
                match blocks.last_mut() {
                    Some((pmu, pms, plen, pbs)) if *pmu == *mu && *pms + *plen == ms && *pbs + *plen == bs => {
                        *plen += ks.len();
                    }
                    _ => blocks.push((*mu, ms, ks.len(), bs)),
                }
                perm.extend(ks);
            }
        } else {
            for (k, b) in basic.iter().enumerate() {
                blocks.push((b[0], mono_index([b[1], b[2], b[3]]), 1, perm.len()));
                perm.push(k);
            }
        }
        Layout { monos, max_pow: max_deg, blocks, perm, runs: Vec::new() }
    }
}

/// One configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Lattice vectors as rows (Å).
    pub lattice: [[f64; 3]; 3],
    /// Periodicity along each lattice vector.
    pub pbc: [bool; 3],
    /// Cartesian positions (Å).
    pub positions: Vec<[f64; 3]>,
    /// Species index of each atom (0-based).
    pub types: Vec<usize>,
    /// Collinear signed moment of each atom (μB).
    pub moments: Vec<f64>,
}

/// What to compute.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    /// Spin-inversion symmetrised energy (E(M) + E(-M)) / 2.
    pub symmetrize: bool,
    /// Also compute dE/dtheta.
    pub param_grad: bool,
    /// Compute forces, virial and dE/dm (the backward pass); without them
    /// and without `param_grad` only energies are computed.
    pub forces: bool,
}

impl EvalOptions {
    /// Energies, forces, virial and magnetic derivatives.
    pub fn new(symmetrize: bool, param_grad: bool) -> Self {
        EvalOptions { symmetrize, param_grad, forces: true }
    }
}

/// Results of one evaluation.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Total energy (eV).
    pub energy: f64,
    /// Site energies (eV).
    pub site_energies: Vec<f64>,
    /// Forces -dE/dr (eV/Å).
    pub forces: Vec<[f64; 3]>,
    /// Virial W_ab = -sum_i sum_j dE_i/dr_ij,a r_ij,b = -dE/deps_ab (eV).
    pub virial: [[f64; 3]; 3],
    /// +dE/dm_i (eV/μB).
    pub dedm: Vec<f64>,
    /// dE/dtheta (empty unless requested).
    pub param_grad: Vec<f64>,
    /// Atoms with a neighbour closer than min_dist.
    pub n_close_atoms: usize,
    /// Atoms whose moment lies outside their species' magnetic interval.
    pub n_moments_outside: usize,
    /// Number of ordered neighbour pairs.
    pub n_pairs: usize,
}

impl Output {
    /// An error naming the first non-finite result (energy, forces, virial,
    /// dE/dm, dE/dtheta), which comes from overflow in the polynomials.
    pub fn check_finite(&self) -> Result<()> {
        let bad = |what: String| {
            Err(MmtpError::Value(format!(
                "the {what} is not finite: the potential overflows for this configuration \
                 (extreme parameters, moments or distances)"
            )))
        };
        if let Some(i) = crate::first_non_finite(&self.site_energies) {
            return bad(format!("site energy of atom {i}"));
        }
        if !self.energy.is_finite() {
            return bad("energy".into());
        }
        if let Some(i) = crate::first_non_finite(self.forces.as_flattened()).map(|k| k / 3) {
            return bad(format!("force on atom {i}"));
        }
        if let Some(i) = crate::first_non_finite(&self.dedm) {
            return bad(format!("magnetic force on atom {i}"));
        }
        if self.virial.iter().flatten().any(|x| !x.is_finite()) {
            return bad("virial (stress)".into());
        }
        if let Some(k) = crate::first_non_finite(&self.param_grad) {
            return bad(format!("parameter gradient (component {k})"));
        }
        Ok(())
    }
}

impl Potential {
    /// Build a potential, checking every part.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n_species: usize,
        scaling: f64,
        min_dist: f64,
        max_dist: f64,
        n_phi: usize,
        n_psi: usize,
        mag_lo: Vec<f64>,
        mag_hi: Vec<f64>,
        tables: Tables,
        params: Vec<f64>,
    ) -> Result<Self> {
        if n_species == 0 || n_species > limits::MAX_SPECIES {
            return Err(MmtpError::Potential(format!(
                "species_count must be between 1 and {}, got {n_species}",
                limits::MAX_SPECIES
            )));
        }
        if !(scaling.is_finite() && scaling.abs() <= limits::MAX_ABS_VALUE) {
            return Err(MmtpError::Potential(format!(
                "scaling must be finite with |scaling| <= {:e}, got {scaling}",
                limits::MAX_ABS_VALUE
            )));
        }
        if !(min_dist.is_finite() && max_dist.is_finite() && min_dist >= 0.0 && max_dist > min_dist) {
            return Err(MmtpError::Potential(format!(
                "need 0 <= min_dist < max_dist, got min_dist {min_dist}, max_dist {max_dist}"
            )));
        }
        if max_dist > limits::MAX_CUTOFF {
            return Err(MmtpError::Potential(format!(
                "max_dist {max_dist} Å exceeds the limit of {} Å",
                limits::MAX_CUTOFF
            )));
        }
        if n_phi == 0 || n_psi == 0 || n_phi > limits::MAX_BASIS_SIZE || n_psi > limits::MAX_BASIS_SIZE {
            return Err(MmtpError::Potential(format!(
                "radial_basis_size ({n_phi}) and magnetic basis size ({n_psi}) must be between 1 and {}",
                limits::MAX_BASIS_SIZE
            )));
        }
        if mag_lo.len() != n_species || mag_hi.len() != n_species {
            return Err(MmtpError::Shape(format!(
                "magnetic intervals given for {} / {} species, expected {n_species}",
                mag_lo.len(),
                mag_hi.len()
            )));
        }
        for z in 0..n_species {
            let (lo, hi) = (mag_lo[z], mag_hi[z]);
            let finite = lo.is_finite() && hi.is_finite() && lo.abs().max(hi.abs()) <= limits::MAX_ABS_VALUE;
            if !finite || (n_psi > 1 && !(hi > lo)) {
                return Err(MmtpError::Potential(format!(
                    "magnetic interval of species {z} must be finite with min < max, got [{lo}, {hi}]"
                )));
            }
        }
        tables.validate()?;
        let n_radial = tables.n_radial();
        let n_params = [n_species, n_species, n_radial, n_phi, n_psi, n_psi]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .and_then(|r| r.checked_add(n_species + tables.scalars.len()))
            .filter(|&p| p <= limits::MAX_PARAMS);
        if n_params.is_none() {
            return Err(MmtpError::Potential(format!(
                "the potential would have more than {} parameters",
                limits::MAX_PARAMS
            )));
        }
        if n_radial > 64 || tables.basic.iter().any(|b| b[1] + b[2] + b[3] > 31) {
            return Err(MmtpError::Potential(
                "basis too large: at most 64 radial functions and tensor rank 31".into(),
            ));
        }
        let mut layout = Layout::new(&tables.basic);
        for (t, &(_, _, _, k)) in tables.times.iter().enumerate() {
            match layout.runs.last_mut() {
                Some(run) if run.0 == k => run.2 = t + 1,
                _ => layout.runs.push((k, t, t + 1)),
            }
        }
        let mut pot = Potential {
            n_species,
            scaling,
            min_dist,
            max_dist,
            n_phi,
            n_psi,
            mag_lo,
            mag_hi,
            tables,
            n_radial,
            params: Vec::new(),
            ct: Vec::new(),
            layout,
        };
        pot.set_params(params)?;
        Ok(pot)
    }

    /// True when every species' magnetic interval is symmetric about zero
    /// (and the basis is magnetic), so that psi_b(-m) = (-1)^b psi_b(m)
    /// exactly and the kernel can serve both spin signs in one pass.
    pub(crate) fn parity_symmetric(&self) -> bool {
        self.n_psi > 1 && self.mag_lo.iter().zip(&self.mag_hi).all(|(&lo, &hi)| lo == -hi)
    }

    /// Number of radial coefficients.
    pub fn n_radial_coeffs(&self) -> usize {
        self.n_species * self.n_species * self.n_radial * self.n_phi * self.n_psi * self.n_psi
    }
    /// Total number of parameters.
    pub fn n_params(&self) -> usize {
        self.n_radial_coeffs() + self.n_species + self.tables.scalars.len()
    }
    /// All parameters.
    pub fn params(&self) -> &[f64] {
        &self.params
    }
    /// Replace all parameters.
    pub fn set_params(&mut self, params: Vec<f64>) -> Result<()> {
        if params.len() != self.n_params() {
            return Err(MmtpError::Shape(format!(
                "expected {} parameters, got {}",
                self.n_params(),
                params.len()
            )));
        }
        if let Some(k) = params.iter().position(|x| !x.is_finite()) {
            return Err(MmtpError::Value(format!("parameter {k} is not finite: {}", params[k])));
        }
        if let Some(k) = params.iter().position(|x| x.abs() > limits::MAX_ABS_VALUE) {
            return Err(MmtpError::Value(format!(
                "parameter {k} = {} is beyond the limit |value| <= {:e}",
                params[k],
                limits::MAX_ABS_VALUE
            )));
        }
        self.params = params;
        let (c, kr, p, mm) = (self.n_species, self.n_radial, self.n_phi, self.n_psi * self.n_psi);
        let block = kr * p * mm;
        let mut ct = vec![0.0; c * c * block];
        for pair in 0..c * c {
            for mu in 0..kr {
                for z in 0..p {
                    for t in 0..mm {
                        ct[pair * block + z * kr * mm + mu * mm + t] = self.params[pair * block + (mu * p + z) * mm + t];
                    }
                }
            }
        }
        self.ct = ct;
        Ok(())
    }
    pub(crate) fn species_offset(&self) -> usize {
        self.n_radial_coeffs()
    }
    pub(crate) fn moment_offset(&self) -> usize {
        self.n_radial_coeffs() + self.n_species
    }

    /// Check a configuration against this potential.
    pub fn check_config(&self, cfg: &Config) -> Result<()> {
        let n = cfg.positions.len();
        if cfg.types.len() != n || cfg.moments.len() != n {
            return Err(MmtpError::Shape(format!(
                "{n} positions but {} types and {} moments",
                cfg.types.len(),
                cfg.moments.len()
            )));
        }
        for (i, &t) in cfg.types.iter().enumerate() {
            if t >= self.n_species {
                return Err(MmtpError::Value(format!(
                    "atom {i} has species index {t}, but the potential has {} species",
                    self.n_species
                )));
            }
        }
        for (i, &m) in cfg.moments.iter().enumerate() {
            if !m.is_finite() {
                return Err(MmtpError::Value(format!("magnetic moment of atom {i} is not finite: {m}")));
            }
            if self.n_psi > 1 {
                let z = cfg.types[i];
                let bound = limits::MAX_MOMENT_FACTOR * self.mag_lo[z].abs().max(self.mag_hi[z].abs());
                if m.abs() > bound {
                    return Err(MmtpError::Value(format!(
                        "magnetic moment of atom {i} is {m} μB, beyond {} times the magnetic interval [{}, {}] of its species {z}",
                        limits::MAX_MOMENT_FACTOR,
                        self.mag_lo[z],
                        self.mag_hi[z]
                    )));
                }
            }
        }
        Ok(())
    }

    /// Neighbour list of a configuration at this potential's cutoff.
    pub fn neighbors(&self, cfg: &Config) -> Result<NeighborList> {
        neighbors::build(&cfg.lattice, cfg.pbc, &cfg.positions, self.max_dist)
    }

    /// Evaluate one configuration.
    pub fn evaluate(&self, cfg: &Config, opts: EvalOptions) -> Result<Output> {
        Ok(self.evaluate_checked(cfg, opts, false)?.0)
    }

    /// Check the configuration, build its neighbour list and evaluate it
    /// (with the per-site parameter gradients if `site_grad`); every result
    /// is checked finite, so overflow is an error and never a NaN.
    pub fn evaluate_checked(&self, cfg: &Config, opts: EvalOptions, site_grad: bool) -> Result<(Output, Option<Vec<f64>>)> {
        self.check_config(cfg)?;
        let nl = self.neighbors(cfg)?;
        let (out, rows) = if site_grad {
            let (out, rows) = self.evaluate_with_sites(cfg, &nl, opts);
            (out, Some(rows))
        } else {
            (self.evaluate_with(cfg, &nl, opts), None)
        };
        out.check_finite()?;
        if let Some(k) = rows.as_deref().and_then(crate::first_non_finite) {
            let np = self.n_params().max(1);
            return Err(MmtpError::Value(format!(
                "the site parameter gradient of atom {} is not finite (component {}): the potential overflows here",
                k / np,
                k % np
            )));
        }
        Ok((out, rows))
    }

    /// Evaluate many configurations in parallel.
    pub fn evaluate_many(&self, cfgs: &[Config], opts: EvalOptions) -> Vec<Result<Output>> {
        cfgs.par_iter().map(|c| self.evaluate(c, opts)).collect()
    }

    /// Evaluate with a prebuilt neighbour list (the config must have been checked).
    pub fn evaluate_with(&self, cfg: &Config, nl: &NeighborList, opts: EvalOptions) -> Output {
        let acc = self.run(&cfg.types, nl, &nl.vec, &cfg.moments, opts.symmetrize, opts);
        self.finish(cfg, nl, opts, acc)
    }

    fn finish(&self, cfg: &Config, nl: &NeighborList, opts: EvalOptions, acc: Acc<f64>) -> Output {
        let n = cfg.positions.len();
        let mut n_close = 0;
        let rmin2 = self.min_dist * self.min_dist;
        for i in 0..n {
            if nl.range(i).any(|k| {
                let v = nl.vec[k];
                v[0] * v[0] + v[1] * v[1] + v[2] * v[2] < rmin2
            }) {
                n_close += 1;
            }
        }
        let mut n_out = 0;
        if self.n_psi > 1 {
            for i in 0..n {
                let z = cfg.types[i];
                let m = cfg.moments[i];
                // symmetrised evaluation also visits -m
                let outside = |x: f64| x < self.mag_lo[z] || x > self.mag_hi[z];
                if outside(m) || (opts.symmetrize && outside(-m)) {
                    n_out += 1;
                }
            }
        }
        let energy = acc.site.iter().sum();
        Output {
            energy,
            site_energies: acc.site,
            forces: acc.dedr.iter().map(|g| [-g[0], -g[1], -g[2]]).collect(),
            virial: acc.virial,
            dedm: acc.dedm,
            param_grad: acc.grad,
            n_close_atoms: n_close,
            n_moments_outside: n_out,
            n_pairs: nl.n_pairs(),
        }
    }

    /// Site energy of atom `i` (for each sign of the moments in `signs`,
    /// each weighted by `w`) and its contributions to all derivatives.
    ///
    /// Data layout: structure of arrays over the neighbours (sorted by
    /// species), so every inner loop runs over the ~50-100 neighbours and
    /// vectorises. The geometry (radial basis contracted with the
    /// coefficients, angular monomials) is shared by both signs, and the
    /// force back-propagation through the angular part is done once. Generic
    /// over the scalar type (f64, or dual numbers for directional
    /// derivatives); `vecs` and `moms` hold the neighbour vectors (indexed
    /// like `nl.vec`) and the moments.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn atom<T: Num, const F: bool>(
        &self,
        types: &[usize],
        nl: &NeighborList,
        vecs: &[[T; 3]],
        moms: &[T],
        i: usize,
        signs: &[f64],
        w: f64,
        opts: EvalOptions,
        sc: &mut Scratch<T>,
        acc: &mut Acc<T>,
    ) {
        let lay = &self.layout;
        let c_ = self.n_species;
        let kr = self.n_radial;
        let p_ = self.n_phi;
        let m_ = self.n_psi;
        let mm = m_ * m_;
        let kmm = kr * mm;
        let nmono = lay.monos.len();
        let nbasic = lay.perm.len();
        let zi = types[i];
        let range = nl.range(i);
        // per-neighbour arrays have a stride nn padded to a multiple of the
        // vector width; the padding entries have zero radial functions, so
        // they add nothing, and the scatter loops visit real neighbours only
        let nreal = range.len();
        let nn = nreal.div_ceil(LANES) * LANES;
        let mp1 = lay.max_pow + 1;
        let backward = opts.forces || opts.param_grad;
        let block = kr * p_ * mm;
        let zero = T::cst(0.0);
        sc.prepare(nn, self);
        let pair = signs.len() == 2 && signs[0] == 1.0 && signs[1] == -1.0 && self.parity_symmetric();

        // ---- neighbours sorted by species: group z is ks[gs[z]..gs[z + 1]]
        sc.ks.clear();
        sc.gs.clear();
        for z in 0..c_ {
            sc.gs.push(sc.ks.len());
            for k in range.clone() {
                if types[nl.index[k]] == z {
                    sc.ks.push(k);
                }
            }
        }
        sc.gs.push(sc.ks.len());

        // ---- geometry, shared by both signs
        let rc = self.max_dist;
        let rmin = self.min_dist;
        let xs = 2.0 / (rc - rmin);
        let x0 = (rmin + rc) / (rc - rmin);
        {
            let (ux, rest) = sc.u.split_at_mut(nn);
            let (uy, uz) = rest.split_at_mut(nn);
            for (n, &k) in sc.ks.iter().enumerate() {
                let v = vecs[k];
                let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
                let inv_r = r.recip();
                ux[n] = v[0] * inv_r;
                uy[n] = v[1] * inv_r;
                uz[n] = v[2] * inv_r;
                sc.inv_r[n] = inv_r;
                let x = r * xs - T::cst(x0);
                let d = T::cst(rc) - r;
                sc.xr[n] = x;
                sc.d2[n] = d * d * self.scaling;
                sc.d1[n] = d * (2.0 * self.scaling);
            }
            for n in nreal..nn {
                ux[n] = zero;
                uy[n] = zero;
                uz[n] = zero;
                sc.inv_r[n] = zero;
                sc.xr[n] = zero;
                sc.d2[n] = zero;
                sc.d1[n] = zero;
            }
        }
        // Chebyshev T_z(x) and T_z'(x) of every neighbour, then phi and dphi
        {
            let t = &mut sc.t;
            let dt = &mut sc.dt;
            for n in 0..nn {
                t[n] = T::cst(1.0);
                dt[n] = zero;
            }
            if p_ > 1 {
                for n in 0..nn {
                    t[nn + n] = sc.xr[n];
                    dt[nn + n] = T::cst(1.0);
                }
            }
            for z in 2..p_ {
                let (lo, hi) = t.split_at_mut(z * nn);
                let (dlo, dhi) = dt.split_at_mut(z * nn);
                let (t2, t1) = (&lo[(z - 2) * nn..(z - 1) * nn], &lo[(z - 1) * nn..z * nn]);
                let (d2_, d1_) = (&dlo[(z - 2) * nn..(z - 1) * nn], &dlo[(z - 1) * nn..z * nn]);
                let tz = &mut hi[..nn];
                let dz = &mut dhi[..nn];
                for n in 0..nn {
                    let x2 = sc.xr[n] * 2.0;
                    tz[n] = x2 * t1[n] - t2[n];
                    dz[n] = t1[n] * 2.0 + x2 * d1_[n] - d2_[n];
                }
            }
            for z in 0..p_ {
                let ph = &mut sc.phi[z * nn..(z + 1) * nn];
                let tz = &t[z * nn..(z + 1) * nn];
                for n in 0..nn {
                    ph[n] = tz[n] * sc.d2[n];
                }
                if opts.forces {
                    let dph = &mut sc.dphi[z * nn..(z + 1) * nn];
                    let dz = &dt[z * nn..(z + 1) * nn];
                    for n in 0..nn {
                        dph[n] = dz[n] * xs * sc.d2[n] - tz[n] * sc.d1[n];
                    }
                }
            }
        }
        // H[t][n] = sum_zeta c[zi zj(n) t zeta] phi_zeta(n) (and with dphi),
        // accumulated in registers over zeta for LANES neighbours at a time
        // every real neighbour is written below; the padding is zero
        for t in 0..kmm {
            sc.h[t * nn + nreal..(t + 1) * nn].fill(zero);
            if opts.forces {
                sc.hd[t * nn + nreal..(t + 1) * nn].fill(zero);
            }
        }
        for zj in 0..c_ {
            let (s0, s1) = (sc.gs[zj], sc.gs[zj + 1]);
            if s0 == s1 {
                continue;
            }
            let cpair = &self.ct[(zi * c_ + zj) * block..(zi * c_ + zj + 1) * block];
            let (phi_all, dphi_all) = (&sc.phi[..], &sc.dphi[..]);
            let (h_all, hd_all) = (&mut sc.h[..], &mut sc.hd[..]);
            let mut n0 = s0;
            while n0 < s1 {
                let w_ = (s1 - n0).min(LANES);
                // TB radial functions at a time (a short last block repeats
                // its last one and drops it), so each phi load serves TB sums
                for t0 in (0..kmm).step_by(TB) {
                    let tn = (kmm - t0).min(TB);
                    let mut a = [[zero; LANES]; TB];
                    let mut ad = [[zero; LANES]; TB];
                    for z in 0..p_ {
                        let ph = lanes(phi_all, z * nn + n0);
                        let c = &cpair[z * kmm..(z + 1) * kmm];
                        if opts.forces {
                            let dph = lanes(dphi_all, z * nn + n0);
                            for u in 0..TB {
                                let ct = c[t0 + u.min(tn - 1)];
                                for l in 0..LANES {
                                    a[u][l] = ph[l].fma_c::<F>(ct, a[u][l]);
                                    ad[u][l] = dph[l].fma_c::<F>(ct, ad[u][l]);
                                }
                            }
                        } else {
                            for u in 0..TB {
                                let ct = c[t0 + u.min(tn - 1)];
                                for l in 0..LANES {
                                    a[u][l] = ph[l].fma_c::<F>(ct, a[u][l]);
                                }
                            }
                        }
                    }
                    for u in 0..tn {
                        let t = t0 + u;
                        for l in 0..w_ {
                            h_all[t * nn + n0 + l] = a[u][l];
                        }
                        if opts.forces {
                            for l in 0..w_ {
                                hd_all[t * nn + n0 + l] = ad[u][l];
                            }
                        }
                    }
                }
                n0 += LANES;
            }
        }
        // monomials mono[q][n] by the degree recursion (canonical order):
        // x * (all of degree nu-1), y * (the a = 0 tail of degree nu-1), z * (the last one)
        {
            let mono = &mut sc.mono;
            for n in 0..nn {
                mono[n] = T::cst(1.0);
            }
            let (ux, rest) = sc.u.split_at(nn);
            let (uy, uz) = rest.split_at(nn);
            let mut prev_start = 0;
            let mut prev_len = 1;
            for nu in 1..mp1 {
                let start = prev_start + prev_len;
                let (lo, hi) = mono.split_at_mut(start * nn);
                for t in 0..prev_len {
                    let src = &lo[(prev_start + t) * nn..(prev_start + t + 1) * nn];
                    let dst = &mut hi[t * nn..(t + 1) * nn];
                    for n in 0..nn {
                        dst[n] = ux[n] * src[n];
                    }
                }
                for t in 0..nu {
                    let q = prev_start + prev_len - nu + t;
                    let src = &lo[q * nn..(q + 1) * nn];
                    let dst = &mut hi[(prev_len + t) * nn..(prev_len + t + 1) * nn];
                    for n in 0..nn {
                        dst[n] = uy[n] * src[n];
                    }
                }
                let q = prev_start + prev_len - 1;
                let src = &lo[q * nn..(q + 1) * nn];
                let dst = &mut hi[(prev_len + nu) * nn..(prev_len + nu + 1) * nn];
                for n in 0..nn {
                    dst[n] = uz[n] * src[n];
                }
                prev_start = start;
                prev_len += nu + 1;
            }
        }
        if opts.forces {
            sc.wq[..nmono * nn].fill(zero);
            sc.radial_g[..nn].fill(zero);
        }
        if opts.param_grad {
            sc.gpair[..kmm * nn].fill(zero);
        }

        if pair {
            // Both spin signs in one pass. With symmetric intervals
            // psi_b(-m) = (-1)^b psi_b(m), so for sign s every radial function
            // is f_s = f_e + s f_o (terms with beta + gamma even / odd), and so
            // are its derivatives. The basic moments follow the same split;
            // the nonlinear part (composite moments and their adjoints) runs
            // on the two signs side by side; the backward pass needs only
            // g_P = g_+ + g_- and g_M = g_+ - g_-.
            self.magnetic_basis(types, nl, moms, i, 1.0, sc);
            // f[(2 mu + parity) nn + n], likewise fmj, fmi, fr
            let k2 = 2 * kr * nn;
            // accumulated in registers over (beta, gamma), LANES neighbours at a time
            let (h_all, hd_all, pj_all, dpj_all) = (&sc.h[..], &sc.hd[..], &sc.pj[..], &sc.dpj[..]);
            let (psi_i, dpsi_i) = (&sc.psi_i[..], &sc.dpsi_i[..]);
            for mu in 0..kr {
                let (oe, oo) = (2 * mu * nn, (2 * mu + 1) * nn);
                for n0 in (0..nn).step_by(LANES) {
                    let mut f = [[zero; LANES]; 2];
                    let mut fj = [[zero; LANES]; 2];
                    let mut fi = [[zero; LANES]; 2];
                    let mut fr = [[zero; LANES]; 2];
                    for b in 0..m_ {
                        let (pb, dpb) = (psi_i[b], dpsi_i[b]);
                        for g in 0..m_ {
                            let t = mu * mm + b * m_ + g;
                            let par = (b + g) & 1;
                            let h = lanes(h_all, t * nn + n0);
                            let pg = lanes(pj_all, g * nn + n0);
                            for l in 0..LANES {
                                f[par][l] = (h[l] * pb).fma::<F>(pg[l], f[par][l]);
                            }
                            if backward {
                                let dpg = lanes(dpj_all, g * nn + n0);
                                for l in 0..LANES {
                                    fj[par][l] = (h[l] * pb).fma::<F>(dpg[l], fj[par][l]);
                                    fi[par][l] = (h[l] * dpb).fma::<F>(pg[l], fi[par][l]);
                                }
                            }
                            if opts.forces {
                                let hd = lanes(hd_all, t * nn + n0);
                                for l in 0..LANES {
                                    fr[par][l] = (hd[l] * pb).fma::<F>(pg[l], fr[par][l]);
                                }
                            }
                        }
                    }
                    sc.f[oe + n0..oe + n0 + LANES].copy_from_slice(&f[0]);
                    sc.f[oo + n0..oo + n0 + LANES].copy_from_slice(&f[1]);
                    if backward {
                        sc.fmj[oe + n0..oe + n0 + LANES].copy_from_slice(&fj[0]);
                        sc.fmj[oo + n0..oo + n0 + LANES].copy_from_slice(&fj[1]);
                        sc.fmi[oe + n0..oe + n0 + LANES].copy_from_slice(&fi[0]);
                        sc.fmi[oo + n0..oo + n0 + LANES].copy_from_slice(&fi[1]);
                    }
                    if opts.forces {
                        sc.fr[oe + n0..oe + n0 + LANES].copy_from_slice(&fr[0]);
                        sc.fr[oo + n0..oo + n0 + LANES].copy_from_slice(&fr[1]);
                    }
                }
            }
            // basic moments of both signs: (even +- odd) contractions
            let mom = &mut sc.moments2;
            let (f_all, mono_all) = (&sc.f[..], &sc.mono[..]);
            for &(mu, ms, len, bs) in &lay.blocks {
                let (oe, oo) = (2 * mu * nn, (2 * mu + 1) * nn);
                // QB monomials at a time, so each load of f serves 2 QB products
                for t0 in (0..len).step_by(QB) {
                    let qn = (len - t0).min(QB);
                    let mut se = [[zero; LANES]; QB];
                    let mut so = [[zero; LANES]; QB];
                    for n0 in (0..nn).step_by(LANES) {
                        let fe = lanes(f_all, oe + n0);
                        let fo = lanes(f_all, oo + n0);
                        // a fixed count keeps the sums in registers; a short
                        // last block repeats its last monomial and drops it
                        for u in 0..QB {
                            let mono = lanes(mono_all, (ms + t0 + u.min(qn - 1)) * nn + n0);
                            for l in 0..LANES {
                                se[u][l] = fe[l].fma::<F>(mono[l], se[u][l]);
                                so[u][l] = fo[l].fma::<F>(mono[l], so[u][l]);
                            }
                        }
                    }
                    for u in 0..qn {
                        let be = (se[u][0] + se[u][2]) + (se[u][1] + se[u][3]);
                        let bo = (so[u][0] + so[u][2]) + (so[u][1] + so[u][3]);
                        let kb = lay.perm[bs + t0 + u];
                        mom[kb] = [be + bo, be - bo];
                    }
                }
            }
            mom[nbasic..].fill([zero; 2]);
            debug_assert!(mom.len() == self.tables.n_moments);
            let times = &self.tables.times;
            for &(k, t0, t1) in &lay.runs {
                // products into moment k, summed in registers (a, b < k)
                let mut v = [zero; 2];
                for &(a, b, mult, _) in &times[t0..t1] {
                    // SAFETY: Tables::validate checked every index against n_moments = mom.len()
                    let (ma, mb) = unsafe { (*mom.get_unchecked(a), *mom.get_unchecked(b)) };
                    for l in 0..2 {
                        v[l] = (ma[l] * mb[l]).fma_c::<F>(mult, v[l]);
                    }
                }
                for l in 0..2 {
                    mom[k][l] += v[l];
                }
            }
            let xi = &self.params[self.moment_offset()..];
            let mut sum = zero;
            for (al, &s) in self.tables.scalars.iter().enumerate() {
                sum += (mom[s][0] + mom[s][1]) * xi[al];
            }
            acc.site[i] += T::cst(self.params[self.species_offset() + zi] * (2.0 * w)) + sum * w;
            if opts.param_grad {
                let so = self.species_offset();
                let mo = self.moment_offset();
                acc.grad[so + zi] += T::cst(2.0 * w);
                for (al, &s) in self.tables.scalars.iter().enumerate() {
                    acc.grad[mo + al] += (mom[s][0] + mom[s][1]) * w;
                }
            }
            if backward {
                let dm = &mut sc.dmom2;
                dm.fill([zero; 2]);
                for (al, &s) in self.tables.scalars.iter().enumerate() {
                    dm[s][0] += T::cst(xi[al]);
                    dm[s][1] += T::cst(xi[al]);
                }
                debug_assert!(dm.len() == mom.len());
                for &(k, t0, t1) in lay.runs.iter().rev() {
                    let dk = dm[k];
                    for &(a, b, mult, _) in times[t0..t1].iter().rev() {
                        // SAFETY: as above, dm.len() == mom.len() == n_moments
                        unsafe {
                            let (ma, mb) = (*mom.get_unchecked(a), *mom.get_unchecked(b));
                            let da = dm.get_unchecked_mut(a);
                            for l in 0..2 {
                                da[l] = (dk[l] * mult).fma::<F>(mb[l], da[l]);
                            }
                            let db = dm.get_unchecked_mut(b);
                            for l in 0..2 {
                                db[l] = (dk[l] * mult).fma::<F>(ma[l], db[l]);
                            }
                        }
                    }
                }
                // g[(2 mu) nn + n] = g_P, g[(2 mu + 1) nn + n] = g_M;
                // wq[q](n) += w (f_e(n) dP[q] + f_o(n) dM[q])
                sc.g[..k2].fill(zero);
                for &(mu, ms, len, bs) in &lay.blocks {
                    sc.dpm.clear();
                    for t in 0..len {
                        let kb = lay.perm[bs + t];
                        sc.dpm.push((dm[kb][0] + dm[kb][1], dm[kb][0] - dm[kb][1]));
                    }
                    let (oe, oo) = (2 * mu * nn, (2 * mu + 1) * nn);
                    let (g_all, wq_all, f_all, mono_all, dpm) = (&mut sc.g[..], &mut sc.wq[..], &sc.f[..], &sc.mono[..], &sc.dpm[..]);
                    for n0 in (0..nn).step_by(LANES) {
                        let mut gp = *lanes(g_all, oe + n0);
                        let mut gm = *lanes(g_all, oo + n0);
                        let fe = lanes(f_all, oe + n0);
                        let fo = lanes(f_all, oo + n0);
                        let few = fe.map(|x| x * w);
                        let fow = fo.map(|x| x * w);
                        for (t, &(dp, dmm)) in dpm.iter().enumerate() {
                            let q = (ms + t) * nn + n0;
                            let mono = lanes(mono_all, q);
                            for l in 0..LANES {
                                gp[l] = mono[l].fma::<F>(dp, gp[l]);
                                gm[l] = mono[l].fma::<F>(dmm, gm[l]);
                            }
                            if opts.forces {
                                let wq: &mut [T; LANES] = (&mut wq_all[q..q + LANES]).try_into().expect("LANES values");
                                for l in 0..LANES {
                                    wq[l] = few[l].fma::<F>(dp, fow[l].fma::<F>(dmm, wq[l]));
                                }
                            }
                        }
                        g_all[oe + n0..oe + n0 + LANES].copy_from_slice(&gp);
                        g_all[oo + n0..oo + n0 + LANES].copy_from_slice(&gm);
                    }
                }
                if opts.forces {
                    let mut dedmi = zero;
                    sc.tmp[..nn].fill(zero);
                    for mu in 0..kr {
                        let (a, b) = (2 * mu * nn, (2 * mu + 1) * nn);
                        let (gp, gm) = (&sc.g[a..a + nn], &sc.g[b..b + nn]);
                        dedmi += dot(gp, &sc.fmi[a..a + nn]) + dot(gm, &sc.fmi[b..b + nn]);
                        let (fre, fro) = (&sc.fr[a..a + nn], &sc.fr[b..b + nn]);
                        let (fje, fjo) = (&sc.fmj[a..a + nn], &sc.fmj[b..b + nn]);
                        for n in 0..nn {
                            sc.radial_g[n] += (gp[n] * fre[n] + gm[n] * fro[n]) * w;
                            sc.tmp[n] += gp[n] * fje[n] + gm[n] * fjo[n];
                        }
                    }
                    for (n, &k) in sc.ks.iter().enumerate() {
                        acc.dedm[nl.index[k]] += sc.tmp[n] * w;
                    }
                    acc.dedm[i] += dedmi * w;
                }
                if opts.param_grad {
                    for mu in 0..kr {
                        for b in 0..m_ {
                            let gb = sc.psi_i[b] * w;
                            for gg in 0..m_ {
                                let t = mu * mm + b * m_ + gg;
                                let o = (2 * mu + ((b + gg) & 1)) * nn;
                                let g = &sc.g[o..o + nn];
                                let pg = &sc.pj[gg * nn..(gg + 1) * nn];
                                let gp = &mut sc.gpair[t * nn..(t + 1) * nn];
                                for n in 0..nn {
                                    gp[n] = (g[n] * gb).fma::<F>(pg[n], gp[n]);
                                }
                            }
                        }
                    }
                }
            }
        } else {
        for &sign in signs {
            // magnetic basis of the central atom and of every neighbour
            self.magnetic_basis(types, nl, moms, i, sign, sc);
            // f_mu(n) and its derivatives: contract H over (beta, gamma)
            sc.f[..kr * nn].fill(zero);
            sc.fmj[..kr * nn].fill(zero);
            sc.fmi[..kr * nn].fill(zero);
            if opts.forces {
                sc.fr[..kr * nn].fill(zero);
            }
            for mu in 0..kr {
                for b in 0..m_ {
                    let (pb, dpb) = (sc.psi_i[b], sc.dpsi_i[b]);
                    for g in 0..m_ {
                        let t = mu * mm + b * m_ + g;
                        let h = &sc.h[t * nn..(t + 1) * nn];
                        let pg = &sc.pj[g * nn..(g + 1) * nn];
                        let dpg = &sc.dpj[g * nn..(g + 1) * nn];
                        let f = &mut sc.f[mu * nn..(mu + 1) * nn];
                        for n in 0..nn {
                            f[n] += h[n] * pg[n] * pb;
                        }
                        if backward {
                            let fmj = &mut sc.fmj[mu * nn..(mu + 1) * nn];
                            for n in 0..nn {
                                fmj[n] += h[n] * dpg[n] * pb;
                            }
                            let fmi = &mut sc.fmi[mu * nn..(mu + 1) * nn];
                            for n in 0..nn {
                                fmi[n] += h[n] * pg[n] * dpb;
                            }
                        }
                        if opts.forces {
                            let hd = &sc.hd[t * nn..(t + 1) * nn];
                            let fr = &mut sc.fr[mu * nn..(mu + 1) * nn];
                            for n in 0..nn {
                                fr[n] += hd[n] * pg[n] * pb;
                            }
                        }
                    }
                }
            }
            // basic moments: bm[q] = sum_n f_mu(n) mono_q(n)
            for &(mu, ms, len, bs) in &lay.blocks {
                let f = &sc.f[mu * nn..(mu + 1) * nn];
                for t in 0..len {
                    sc.bm[bs + t] = dot(f, &sc.mono[(ms + t) * nn..(ms + t + 1) * nn]);
                }
            }
            let mom = &mut sc.moments;
            for (t, &kb) in lay.perm.iter().enumerate() {
                mom[kb] = sc.bm[t];
            }
            mom[nbasic..].fill(zero);
            debug_assert!(mom.len() == self.tables.n_moments);
            for &(k, t0, t1) in &lay.runs {
                let mut v = zero;
                for &(a, b, mult, _) in &self.tables.times[t0..t1] {
                    // SAFETY: Tables::validate checked every index against n_moments = mom.len()
                    unsafe {
                        v = (*mom.get_unchecked(a) * *mom.get_unchecked(b)).fma_c::<F>(mult, v);
                    }
                }
                mom[k] += v;
            }
            let xi = &self.params[self.moment_offset()..];
            let mut site = T::cst(self.params[self.species_offset() + zi]);
            for (al, &s) in self.tables.scalars.iter().enumerate() {
                site += mom[s] * xi[al];
            }
            acc.site[i] += site * w;
            if opts.param_grad {
                let so = self.species_offset();
                let mo = self.moment_offset();
                acc.grad[so + zi] += T::cst(w);
                for (al, &s) in self.tables.scalars.iter().enumerate() {
                    acc.grad[mo + al] += mom[s] * w;
                }
            }
            if !backward {
                continue;
            }
            // adjoints of all moments
            let dm = &mut sc.dmom;
            dm.fill(zero);
            for (al, &s) in self.tables.scalars.iter().enumerate() {
                dm[s] += T::cst(xi[al]);
            }
            debug_assert!(dm.len() == self.tables.n_moments);
            for &(k, t0, t1) in lay.runs.iter().rev() {
                let dk = dm[k];
                for &(a, b, mult, _) in self.tables.times[t0..t1].iter().rev() {
                    // SAFETY: Tables::validate checked every index against n_moments = dm.len() = mom.len()
                    unsafe {
                        let g = dk * mult;
                        let ma = *mom.get_unchecked(a);
                        let mb = *mom.get_unchecked(b);
                        *dm.get_unchecked_mut(a) = g.fma::<F>(mb, *dm.get_unchecked(a));
                        *dm.get_unchecked_mut(b) = g.fma::<F>(ma, *dm.get_unchecked(b));
                    }
                }
            }
            for (t, &kb) in lay.perm.iter().enumerate() {
                sc.dbm[t] = dm[kb];
            }
            // g_mu(n) = sum_q dbm[q] mono_q(n); wq[q](n) += w f_mu(n) dbm[q]
            sc.g[..kr * nn].fill(zero);
            for &(mu, ms, len, bs) in &lay.blocks {
                for t in 0..len {
                    let d = sc.dbm[bs + t];
                    let mono = &sc.mono[(ms + t) * nn..(ms + t + 1) * nn];
                    let g = &mut sc.g[mu * nn..(mu + 1) * nn];
                    for n in 0..nn {
                        g[n] += mono[n] * d;
                    }
                    if opts.forces {
                        let dw = d * w;
                        let f = &sc.f[mu * nn..(mu + 1) * nn];
                        let wq = &mut sc.wq[(ms + t) * nn..(ms + t + 1) * nn];
                        for n in 0..nn {
                            wq[n] += f[n] * dw;
                        }
                    }
                }
            }
            if opts.forces {
                let mut dedmi = zero;
                sc.tmp[..nn].fill(zero);
                for mu in 0..kr {
                    let g = &sc.g[mu * nn..(mu + 1) * nn];
                    let fr = &sc.fr[mu * nn..(mu + 1) * nn];
                    let fmj = &sc.fmj[mu * nn..(mu + 1) * nn];
                    dedmi += dot(g, &sc.fmi[mu * nn..(mu + 1) * nn]);
                    for n in 0..nn {
                        sc.radial_g[n] += g[n] * fr[n] * w;
                        sc.tmp[n] += g[n] * fmj[n];
                    }
                }
                for (n, &k) in sc.ks.iter().enumerate() {
                    acc.dedm[nl.index[k]] += sc.tmp[n] * (w * sign);
                }
                acc.dedm[i] += dedmi * (w * sign);
            }
            if opts.param_grad {
                for mu in 0..kr {
                    for b in 0..m_ {
                        let gb = sc.psi_i[b] * w;
                        for gg in 0..m_ {
                            let t = mu * mm + b * m_ + gg;
                            let g = &sc.g[mu * nn..(mu + 1) * nn];
                            let pg = &sc.pj[gg * nn..(gg + 1) * nn];
                            let gp = &mut sc.gpair[t * nn..(t + 1) * nn];
                            for n in 0..nn {
                                gp[n] += g[n] * pg[n] * gb;
                            }
                        }
                    }
                }
            }
        }
        }
        if opts.param_grad {
            // dE/dc[zi zj mu zeta beta gamma] = sum_n phi_zeta(n) gpair[mu beta gamma](n) over neighbours of species zj
            for zj in 0..c_ {
                let (s0, s1) = (sc.gs[zj], sc.gs[zj + 1]);
                if s0 == s1 {
                    continue;
                }
                let dst = &mut acc.grad[(zi * c_ + zj) * block..(zi * c_ + zj + 1) * block];
                let (phi_all, gpair_all) = (&sc.phi[..], &sc.gpair[..]);
                // ZB radial polynomials at a time, so each gpair load serves ZB sums
                let full = s0 + (s1 - s0) / LANES * LANES;
                for mu in 0..kr {
                    for t in 0..mm {
                        let row = (mu * mm + t) * nn;
                        for z0 in (0..p_).step_by(ZB) {
                            let zn = (p_ - z0).min(ZB);
                            let mut a = [[zero; LANES]; ZB];
                            for n0 in (s0..full).step_by(LANES) {
                                let gp = lanes(gpair_all, row + n0);
                                for u in 0..ZB {
                                    let ph = lanes(phi_all, (z0 + u.min(zn - 1)) * nn + n0);
                                    for l in 0..LANES {
                                        a[u][l] = ph[l].fma::<F>(gp[l], a[u][l]);
                                    }
                                }
                            }
                            for u in 0..zn {
                                let z = z0 + u;
                                let mut sum = (a[u][0] + a[u][2]) + (a[u][1] + a[u][3]);
                                for n in full..s1 {
                                    sum = phi_all[z * nn + n].fma::<F>(gpair_all[row + n], sum);
                                }
                                dst[(mu * p_ + z) * mm + t] += sum;
                            }
                        }
                    }
                }
            }
        }
        if !opts.forces {
            return;
        }
        // ---- forces and virial: reverse pass through the monomial recursion
        // gives dE/du for every neighbour at once
        sc.du[..3 * nn].fill(zero);
        {
            let (ux, rest) = sc.u.split_at(nn);
            let (uy, uz) = rest.split_at(nn);
            let (dux, rest) = sc.du.split_at_mut(nn);
            let (duy, duz) = rest.split_at_mut(nn);
            let duz = &mut duz[..nn];
            let wq = &mut sc.wq;
            let mono = &sc.mono;
            let mut end = nmono;
            for nu in (1..mp1).rev() {
                let len = (nu + 1) * (nu + 2) / 2;
                let start = end - len;
                let prev_len = len - nu - 1;
                let prev_start = start - prev_len;
                let (lo, hi) = wq.split_at_mut(start * nn);
                for t in 0..prev_len {
                    let whi = &hi[t * nn..(t + 1) * nn];
                    let prev = &mono[(prev_start + t) * nn..(prev_start + t + 1) * nn];
                    let wprev = &mut lo[(prev_start + t) * nn..(prev_start + t + 1) * nn];
                    for n in 0..nn {
                        dux[n] = whi[n].fma::<F>(prev[n], dux[n]);
                        wprev[n] = ux[n].fma::<F>(whi[n], wprev[n]);
                    }
                }
                for t in 0..nu {
                    let q = prev_start + prev_len - nu + t;
                    let whi = &hi[(prev_len + t) * nn..(prev_len + t + 1) * nn];
                    let prev = &mono[q * nn..(q + 1) * nn];
                    let wprev = &mut lo[q * nn..(q + 1) * nn];
                    for n in 0..nn {
                        duy[n] = whi[n].fma::<F>(prev[n], duy[n]);
                        wprev[n] = uy[n].fma::<F>(whi[n], wprev[n]);
                    }
                }
                let q = prev_start + prev_len - 1;
                let whi = &hi[(prev_len + nu) * nn..(prev_len + nu + 1) * nn];
                let prev = &mono[q * nn..(q + 1) * nn];
                let wprev = &mut lo[q * nn..(q + 1) * nn];
                for n in 0..nn {
                    duz[n] = whi[n].fma::<F>(prev[n], duz[n]);
                    wprev[n] = uz[n].fma::<F>(whi[n], wprev[n]);
                }
                end = start;
            }
        }
        // E depends on v through u = v / r and r: dE/dv = (dU - (dU.u) u) / r + radial u
        for (n, &k) in sc.ks.iter().enumerate() {
            let j = nl.index[k];
            let v = vecs[k];
            let u = [sc.u[n], sc.u[nn + n], sc.u[2 * nn + n]];
            let du = [sc.du[n], sc.du[nn + n], sc.du[2 * nn + n]];
            let inv_r = sc.inv_r[n];
            let sd = du[0] * u[0] + du[1] * u[1] + du[2] * u[2];
            let radial = sc.radial_g[n] - sd * inv_r;
            let gv = [
                du[0] * inv_r + radial * u[0],
                du[1] * inv_r + radial * u[1],
                du[2] * inv_r + radial * u[2],
            ];
            for a in 0..3 {
                acc.dedr[j][a] += gv[a];
                acc.dedr[i][a] -= gv[a];
                for b in 0..3 {
                    acc.virial[a][b] -= gv[a] * v[b];
                }
            }
        }
    }
}

impl Potential {
    /// Magnetic basis of the moments times `sign`: psi_b and dpsi_b/dm of
    /// the central atom `i` (`sc.psi_i`, `sc.dpsi_i`) and of every neighbour,
    /// in the species-sorted order of `sc.ks` (`sc.pj`, `sc.dpj`, stride
    /// `sc.nn`).
    #[inline(always)]
    fn magnetic_basis<T: Num>(&self, types: &[usize], nl: &NeighborList, moms: &[T], i: usize, sign: f64, sc: &mut Scratch<T>) {
        let m_ = self.n_psi;
        let nn = sc.nn;
        let zero = T::cst(0.0);
        let (psi_scale_i, yi) = mag_arg(self, types[i], moms[i] * sign);
        cheb_with_deriv(yi, &mut sc.psi_i, &mut sc.dpsi_i);
        for b in 0..m_ {
            sc.dpsi_i[b] *= psi_scale_i;
        }
        if m_ > 1 {
            let mut pj = [zero; 64];
            let mut dpj = [zero; 64];
            for (n, &k) in sc.ks.iter().enumerate() {
                let j = nl.index[k];
                let (sj, yj) = mag_arg(self, types[j], moms[j] * sign);
                cheb_with_deriv(yj, &mut pj[..m_], &mut dpj[..m_]);
                for g in 0..m_ {
                    sc.pj[g * nn + n] = pj[g];
                    sc.dpj[g * nn + n] = dpj[g] * sj;
                }
            }
        } else {
            sc.pj[..nn].fill(T::cst(1.0));
            sc.dpj[..nn].fill(zero);
        }
    }
}

impl Potential {
    /// The kernel compiled for AVX2 (used when the CPU has it).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn atom_avx2<T: Num>(
        &self,
        types: &[usize],
        nl: &NeighborList,
        vecs: &[[T; 3]],
        moms: &[T],
        i: usize,
        signs: &[f64],
        w: f64,
        opts: EvalOptions,
        sc: &mut Scratch<T>,
        acc: &mut Acc<T>,
    ) {
        self.atom::<T, true>(types, nl, vecs, moms, i, signs, w, opts, sc, acc)
    }

    #[allow(clippy::too_many_arguments)]
    fn atom_dispatch<T: Num>(
        &self,
        simd: bool,
        types: &[usize],
        nl: &NeighborList,
        vecs: &[[T; 3]],
        moms: &[T],
        i: usize,
        signs: &[f64],
        w: f64,
        opts: EvalOptions,
        sc: &mut Scratch<T>,
        acc: &mut Acc<T>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is true only when the CPU reports AVX2 and FMA.
            unsafe { self.atom_avx2(types, nl, vecs, moms, i, signs, w, opts, sc, acc) };
            return;
        }
        let _ = simd;
        self.atom::<T, false>(types, nl, vecs, moms, i, signs, w, opts, sc, acc)
    }

    /// Run the kernel over all atoms, accumulating into one `Acc` (parallel).
    #[allow(clippy::too_many_arguments)]
    fn run<T: Num>(
        &self,
        types: &[usize],
        nl: &NeighborList,
        vecs: &[[T; 3]],
        moms: &[T],
        symmetrize: bool,
        opts: EvalOptions,
    ) -> Acc<T> {
        // centres are the first nl.n_atoms() atoms; the others (ghosts) only
        // appear as neighbours and receive derivative contributions
        let n = types.len();
        let nc = nl.n_atoms();
        // a non-magnetic basis has E(M) = E(-M): one sign is the symmetrised energy
        let signs: &[f64] = if symmetrize && self.n_psi > 1 { &[1.0, -1.0] } else { &[1.0] };
        let weight = 1.0 / signs.len() as f64;
        let np = if opts.param_grad { self.n_params() } else { 0 };
        let simd = simd_available();
        // deterministic at any thread count: fixed chunks summed in index order
        let (acc, _) = crate::threads::ordered_reduce(
            nc,
            atom_chunk(nc),
            &|| (Acc::new(n, np, opts.forces), Scratch::new(self)),
            &|(acc, sc): &mut (Acc<T>, Scratch<T>), i| {
                self.atom_dispatch(simd, types, nl, vecs, moms, i, signs, weight, opts, sc, acc)
            },
            &|a: &mut (Acc<T>, Scratch<T>), b| a.0.add(&b.0),
        );
        acc
    }

    /// Gradient of each site energy with respect to all parameters: an
    /// (N x n_params) row-major matrix whose rows sum to dE/dtheta.
    pub fn site_param_grad(&self, cfg: &Config, nl: &NeighborList, symmetrize: bool) -> Vec<f64> {
        let opts = EvalOptions { symmetrize, param_grad: true, forces: false };
        self.evaluate_with_sites(cfg, nl, opts).1
    }

    /// One pass giving the usual outputs (with dE/dtheta) and the per-site
    /// parameter gradients (N x n_params, row-major): each atom's row is the
    /// change of the accumulated dE/dtheta over that atom's kernel call.
    pub fn evaluate_with_sites(&self, cfg: &Config, nl: &NeighborList, opts: EvalOptions) -> (Output, Vec<f64>) {
        let (acc, matrix) = self.run_sites(&cfg.types, nl, &cfg.moments, opts);
        (self.finish(cfg, nl, opts, acc), matrix)
    }

    /// The kernel over the centres `0..nl.n_atoms()` with per-centre
    /// parameter gradients (n_centres x n_params, row-major).
    fn run_sites(&self, types: &[usize], nl: &NeighborList, moms: &[f64], opts: EvalOptions) -> (Acc<f64>, Vec<f64>) {
        let opts = EvalOptions { param_grad: true, ..opts };
        let n = types.len();
        let nc = nl.n_atoms();
        let np = self.n_params();
        let signs: &[f64] = if opts.symmetrize && self.n_psi > 1 { &[1.0, -1.0] } else { &[1.0] };
        let weight = 1.0 / signs.len() as f64;
        let simd = simd_available();
        // per chunk (a range of centres, folded in order): the rows of its centres,
        // one after another; merging moves the chunks' buffers, never their rows
        type State = (Acc<f64>, Scratch<f64>, Vec<(usize, Vec<f64>)>, Vec<f64>);
        let (acc, _, parts, _) = crate::threads::ordered_reduce(
            nc,
            atom_chunk(nc),
            &|| (Acc::<f64>::new(n, np, opts.forces), Scratch::new(self), Vec::new(), vec![0.0; np]),
            &|(acc, sc, parts, before): &mut State, i| {
                before.copy_from_slice(&acc.grad);
                self.atom_dispatch(simd, types, nl, &nl.vec, moms, i, signs, weight, opts, sc, acc);
                let row = acc.grad.iter().zip(before.iter()).map(|(a, b)| a - b);
                match parts.last_mut() {
                    Some((_, rows)) => rows.extend(row),
                    None => parts.push((i, row.collect())),
                }
            },
            &|a: &mut State, b| {
                a.0.add(&b.0);
                a.2.extend(b.2);
            },
        );
        // the chunks cover the centres 0..nc in order, np entries each
        let mut offset = 0;
        for (first, rows) in &parts {
            assert_eq!(first * np, offset, "site rows out of order");
            offset += rows.len();
        }
        assert_eq!(offset, nc * np, "site rows missing");
        let matrix = crate::threads::concat(&parts.iter().map(|p| &p.1[..]).collect::<Vec<_>>());
        (acc, matrix)
    }

    /// Evaluate the centres of an explicit neighbour list, as a domain of a
    /// parallel MD engine sees them: the centres are atoms `0..nl.n_atoms()`,
    /// `types` and `moments` cover the centres and every neighbour (ghost
    /// atoms after the centres), `nl.index` points into them and `nl.vec`
    /// holds r_j - r_i. Returns the site energies of the centres, and forces,
    /// dE/dm (both over all atoms, ghosts included: their contributions must
    /// be added to the atoms they image) and the virial of the centres' site
    /// energies. `site_rows` also gives the per-centre parameter gradients
    /// (n_centres x n_params, row-major; `param_grad` holds their sum).
    /// The numbers are those of [`Potential::evaluate`] for the same
    /// neighbourhoods: it runs the same kernel.
    pub fn evaluate_local(
        &self,
        types: &[usize],
        moments: &[f64],
        nl: &NeighborList,
        opts: EvalOptions,
        site_rows: bool,
    ) -> Result<(Output, Vec<f64>)> {
        let n = types.len();
        if moments.len() != n || nl.n_atoms() > n || nl.offsets.last().copied().unwrap_or(0) != nl.index.len()
            || nl.vec.len() != nl.index.len()
            || nl.offsets.first().is_some_and(|&o| o != 0)
            || nl.offsets.windows(2).any(|w| w[1] < w[0])
        {
            return Err(MmtpError::Shape(format!(
                "{} centres, {n} types, {} moments, {} neighbour entries",
                nl.n_atoms(),
                moments.len(),
                nl.index.len()
            )));
        }
        if let Some(&t) = types.iter().find(|&&t| t >= self.n_species) {
            return Err(MmtpError::Value(format!("species index {t}, but the potential has {} species", self.n_species)));
        }
        if let Some(&j) = nl.index.iter().find(|&&j| j >= n) {
            return Err(MmtpError::Value(format!("neighbour index {j} beyond the {n} atoms")));
        }
        if let Some(k) = moments.iter().position(|m| !m.is_finite()) {
            return Err(MmtpError::Value(format!("magnetic moment of atom {k} is not finite: {}", moments[k])));
        }
        let (acc, rows) = if site_rows {
            self.run_sites(types, nl, moments, opts)
        } else {
            (self.run(types, nl, &nl.vec, moments, opts.symmetrize, opts), Vec::new())
        };
        let nc = nl.n_atoms();
        let mut site = acc.site;
        site.truncate(nc);
        let out = Output {
            energy: site.iter().sum(),
            site_energies: site,
            forces: acc.dedr.iter().map(|g| [-g[0], -g[1], -g[2]]).collect(),
            virial: acc.virial,
            dedm: acc.dedm,
            param_grad: acc.grad,
            n_close_atoms: 0,
            n_moments_outside: 0,
            n_pairs: nl.n_pairs(),
        };
        Ok((out, rows))
    }

    /// dE/dtheta and its exact derivative along a direction in configuration
    /// space: positions move by `dpos` per unit step, moments by `dmom`, and
    /// the cell (with all positions) is strained by the 3x3 `strain`
    /// (r -> (1 + eps strain) r). Returns (E, dE/dtheta, d/deps dE/dtheta).
    pub fn param_grad_directional(
        &self,
        cfg: &Config,
        nl: &NeighborList,
        symmetrize: bool,
        dpos: &[[f64; 3]],
        dmom: &[f64],
        strain: &[[f64; 3]; 3],
    ) -> (f64, Vec<f64>, Vec<f64>) {
        let vecs: Vec<[Dual; 3]> = (0..cfg.positions.len())
            .flat_map(|i| nl.range(i).map(move |k| (i, k)))
            .map(|(i, k)| {
                let v = nl.vec[k];
                let j = nl.index[k];
                let mut out = [Dual::default(); 3];
                for a in 0..3 {
                    let sv = strain[a][0] * v[0] + strain[a][1] * v[1] + strain[a][2] * v[2];
                    out[a] = Dual::new(v[a], sv + dpos[j][a] - dpos[i][a]);
                }
                out
            })
            .collect();
        let moms: Vec<Dual> = cfg.moments.iter().zip(dmom).map(|(&m, &d)| Dual::new(m, d)).collect();
        let opts = EvalOptions { symmetrize, param_grad: true, forces: false };
        let acc = self.run(&cfg.types, nl, &vecs, &moms, symmetrize, opts);
        let e = acc.site.iter().map(|x| x.re).sum();
        (e, acc.grad.iter().map(|x| x.re).collect(), acc.grad.iter().map(|x| x.du).collect())
    }
}

/// Atoms per chunk of the kernel's parallel loop: a function of the atom
/// count only, so that sums are bit-identical at any thread count.
/// Vector width (f64 lanes) of the kernel's register-blocked loops.
const LANES: usize = 4;
/// Monomials per register block of the basic-moment contraction.
const QB: usize = 4;
/// Radial functions per register block of the H contraction.
const TB: usize = 4;
/// Radial polynomials per register block of the coefficient gradient.
const ZB: usize = 4;

fn atom_chunk(n: usize) -> usize {
    crate::threads::chunk_len(n, 16, 32)
}

/// Dot product with four partial sums (vectorisable).
#[inline(always)]
fn dot<T: Num>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let zero = T::cst(0.0);
    let mut acc = [zero; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += *x * *y;
    }
    s
}

/// The LANES values of `v` from `at` as a fixed-size array.
#[inline(always)]
fn lanes<T: Num>(v: &[T], at: usize) -> &[T; LANES] {
    v[at..at + LANES].try_into().expect("LANES values")
}

/// Argument of the magnetic Chebyshev polynomials and its derivative factor.
#[inline]
fn mag_arg<T: Num>(p: &Potential, z: usize, m: T) -> (f64, T) {
    if p.n_psi == 1 {
        return (0.0, T::cst(0.0));
    }
    let (lo, hi) = (p.mag_lo[z], p.mag_hi[z]);
    let s = 2.0 / (hi - lo);
    (s, m * s - T::cst((lo + hi) / (hi - lo)))
}

struct Acc<T: Num> {
    site: Vec<T>,
    dedr: Vec<[T; 3]>,
    dedm: Vec<T>,
    virial: [[T; 3]; 3],
    grad: Vec<T>,
}

impl<T: Num> Acc<T> {
    fn new(n: usize, np: usize, forces: bool) -> Self {
        let z = T::cst(0.0);
        let nf = if forces { n } else { 0 };
        Acc { site: vec![z; n], dedr: vec![[z; 3]; nf], dedm: vec![z; nf], virial: [[z; 3]; 3], grad: vec![z; np] }
    }
    fn add(&mut self, o: &Acc<T>) {
        for (a, b) in self.site.iter_mut().zip(&o.site) {
            *a += *b;
        }
        for (a, b) in self.dedr.iter_mut().zip(&o.dedr) {
            for k in 0..3 {
                a[k] += b[k];
            }
        }
        for (a, b) in self.dedm.iter_mut().zip(&o.dedm) {
            *a += *b;
        }
        for a in 0..3 {
            for b in 0..3 {
                self.virial[a][b] += o.virial[a][b];
            }
        }
        for (a, b) in self.grad.iter_mut().zip(&o.grad) {
            *a += *b;
        }
    }
}

struct Scratch<T: Num> {
    nn: usize,
    ks: Vec<usize>,
    gs: Vec<usize>,
    psi_i: Vec<T>,
    dpsi_i: Vec<T>,
    u: Vec<T>,
    du: Vec<T>,
    inv_r: Vec<T>,
    xr: Vec<T>,
    d1: Vec<T>,
    d2: Vec<T>,
    t: Vec<T>,
    dt: Vec<T>,
    phi: Vec<T>,
    dphi: Vec<T>,
    h: Vec<T>,
    hd: Vec<T>,
    gpair: Vec<T>,
    pj: Vec<T>,
    dpj: Vec<T>,
    f: Vec<T>,
    fr: Vec<T>,
    fmj: Vec<T>,
    fmi: Vec<T>,
    g: Vec<T>,
    tmp: Vec<T>,
    mono: Vec<T>,
    wq: Vec<T>,
    radial_g: Vec<T>,
    bm: Vec<T>,
    dbm: Vec<T>,
    moments: Vec<T>,
    dmom: Vec<T>,
    moments2: Vec<[T; 2]>,
    dmom2: Vec<[T; 2]>,
    dpm: Vec<(T, T)>,
}

impl<T: Num> Scratch<T> {
    fn new(p: &Potential) -> Self {
        let nb = p.layout.perm.len();
        let z = T::cst(0.0);
        Scratch {
            nn: usize::MAX,
            ks: vec![],
            gs: vec![],
            psi_i: vec![z; p.n_psi],
            dpsi_i: vec![z; p.n_psi],
            u: vec![],
            du: vec![],
            inv_r: vec![],
            xr: vec![],
            d1: vec![],
            d2: vec![],
            t: vec![],
            dt: vec![],
            phi: vec![],
            dphi: vec![],
            h: vec![],
            hd: vec![],
            gpair: vec![],
            pj: vec![],
            dpj: vec![],
            f: vec![],
            fr: vec![],
            fmj: vec![],
            fmi: vec![],
            g: vec![],
            tmp: vec![],
            mono: vec![],
            wq: vec![],
            radial_g: vec![],
            bm: vec![z; nb],
            dbm: vec![z; nb],
            moments: vec![z; p.tables.n_moments],
            dmom: vec![z; p.tables.n_moments],
            moments2: vec![[z; 2]; p.tables.n_moments],
            dmom2: vec![[z; 2]; p.tables.n_moments],
            dpm: Vec::new(),
        }
    }
    /// Size the per-neighbour arrays for `nn` neighbours (stride nn).
    fn prepare(&mut self, nn: usize, p: &Potential) {
        if nn == self.nn {
            return;
        }
        self.nn = nn;
        let z = T::cst(0.0);
        let (kr, pp, m, nm) = (p.n_radial, p.n_phi, p.n_psi, p.layout.monos.len());
        let kmm = kr * m * m;
        for (v, len) in [
            (&mut self.u, 3 * nn),
            (&mut self.du, 3 * nn),
            (&mut self.inv_r, nn),
            (&mut self.xr, nn),
            (&mut self.d1, nn),
            (&mut self.d2, nn),
            (&mut self.t, pp * nn),
            (&mut self.dt, pp * nn),
            (&mut self.phi, pp * nn + LANES),
            (&mut self.dphi, pp * nn + LANES),
            (&mut self.h, kmm * nn),
            (&mut self.hd, kmm * nn),
            (&mut self.gpair, kmm * nn),
            (&mut self.pj, m * nn),
            (&mut self.dpj, m * nn),
            (&mut self.f, 2 * kr * nn),
            (&mut self.fr, 2 * kr * nn),
            (&mut self.fmj, 2 * kr * nn),
            (&mut self.fmi, 2 * kr * nn),
            (&mut self.g, 2 * kr * nn),
            (&mut self.tmp, nn),
            (&mut self.mono, nm * nn),
            (&mut self.wq, nm * nn),
            (&mut self.radial_g, nn),
        ] {
            v.resize(len, z);
        }
    }
}
