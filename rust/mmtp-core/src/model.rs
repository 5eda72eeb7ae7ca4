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
use rayon::prelude::*;

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
        if self.n_moments < nb {
            return Err(MmtpError::Potential(format!(
                "alpha_moments_count {} is smaller than alpha_index_basic_count {nb}",
                self.n_moments
            )));
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
    // derived from the tables
    monos: Vec<[usize; 3]>,
    basic_mono: Vec<usize>,
    basic_mu: Vec<usize>,
    max_pow: usize,
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
        if n_species == 0 {
            return Err(MmtpError::Potential("species_count must be at least 1".into()));
        }
        if !(scaling.is_finite()) {
            return Err(MmtpError::Potential(format!("scaling must be finite, got {scaling}")));
        }
        if !(min_dist.is_finite() && max_dist.is_finite() && min_dist >= 0.0 && max_dist > min_dist) {
            return Err(MmtpError::Potential(format!(
                "need 0 <= min_dist < max_dist, got min_dist {min_dist}, max_dist {max_dist}"
            )));
        }
        if n_phi == 0 || n_psi == 0 {
            return Err(MmtpError::Potential(format!(
                "radial_basis_size ({n_phi}) and magnetic basis size ({n_psi}) must be at least 1"
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
            if n_psi > 1 && !(lo.is_finite() && hi.is_finite() && hi > lo) {
                return Err(MmtpError::Potential(format!(
                    "magnetic interval of species {z} must satisfy min < max, got [{lo}, {hi}]"
                )));
            }
        }
        if n_phi > 64 || n_psi > 64 {
            return Err(MmtpError::Potential(format!(
                "radial_basis_size ({n_phi}) and magnetic basis size ({n_psi}) are limited to 64"
            )));
        }
        tables.validate()?;
        let n_radial = tables.n_radial();
        if n_radial > 64 || tables.basic.iter().any(|b| b[1] + b[2] + b[3] > 31) {
            return Err(MmtpError::Potential(
                "basis too large: at most 64 radial functions and tensor rank 31".into(),
            ));
        }
        let mut monos: Vec<[usize; 3]> = Vec::new();
        let mut basic_mono = Vec::with_capacity(tables.basic.len());
        let mut basic_mu = Vec::with_capacity(tables.basic.len());
        let mut max_pow = 0;
        for b in &tables.basic {
            let m = [b[1], b[2], b[3]];
            max_pow = max_pow.max(b[1]).max(b[2]).max(b[3]);
            let idx = match monos.iter().position(|x| *x == m) {
                Some(p) => p,
                None => {
                    monos.push(m);
                    monos.len() - 1
                }
            };
            basic_mono.push(idx);
            basic_mu.push(b[0]);
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
            monos,
            basic_mono,
            basic_mu,
            max_pow,
        };
        pot.set_params(params)?;
        Ok(pot)
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
        self.params = params;
        Ok(())
    }
    fn species_offset(&self) -> usize {
        self.n_radial_coeffs()
    }
    fn moment_offset(&self) -> usize {
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
        }
        Ok(())
    }

    /// Neighbour list of a configuration at this potential's cutoff.
    pub fn neighbors(&self, cfg: &Config) -> Result<NeighborList> {
        neighbors::build(&cfg.lattice, cfg.pbc, &cfg.positions, self.max_dist)
    }

    /// Evaluate one configuration.
    pub fn evaluate(&self, cfg: &Config, opts: EvalOptions) -> Result<Output> {
        self.check_config(cfg)?;
        let nl = self.neighbors(cfg)?;
        Ok(self.evaluate_with(cfg, &nl, opts))
    }

    /// Evaluate many configurations in parallel.
    pub fn evaluate_many(&self, cfgs: &[Config], opts: EvalOptions) -> Vec<Result<Output>> {
        cfgs.par_iter().map(|c| self.evaluate(c, opts)).collect()
    }

    /// Evaluate with a prebuilt neighbour list (the config must have been checked).
    pub fn evaluate_with(&self, cfg: &Config, nl: &NeighborList, opts: EvalOptions) -> Output {
        let n = cfg.positions.len();
        let signs: &[f64] = if opts.symmetrize { &[1.0, -1.0] } else { &[1.0] };
        let weight = 1.0 / signs.len() as f64;
        let np = if opts.param_grad { self.n_params() } else { 0 };
        let threads = rayon::current_num_threads().max(1);
        let min_len = (n / (4 * threads)).max(16);
        let acc = (0..n)
            .into_par_iter()
            .with_min_len(min_len)
            .fold(
                || (Acc::new(n, np), Scratch::new(self)),
                |(mut acc, mut sc), i| {
                    for &s in signs {
                        self.atom(cfg, nl, i, s, weight, opts, &mut sc, &mut acc);
                    }
                    (acc, sc)
                },
            )
            .map(|(a, _)| a)
            .reduce_with(|mut a, b| {
                a.add(&b);
                a
            })
            .unwrap_or_else(|| Acc::new(n, np));
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

    /// Site energy of atom `i` and its contributions to all derivatives,
    /// for moments multiplied by `sign`, scaled by `w`.
    #[allow(clippy::too_many_arguments)]
    fn atom(
        &self,
        cfg: &Config,
        nl: &NeighborList,
        i: usize,
        sign: f64,
        w: f64,
        opts: EvalOptions,
        sc: &mut Scratch,
        acc: &mut Acc,
    ) {
        let c_ = self.n_species;
        let kr = self.n_radial;
        let p_ = self.n_phi;
        let m_ = self.n_psi;
        let nmono = self.monos.len();
        let nbasic = self.tables.basic.len();
        let zi = cfg.types[i];
        let range = nl.range(i);
        let nn = range.len();
        sc.ensure(nn, self);

        // magnetic basis of the central atom
        let mi = sign * cfg.moments[i];
        let (psi_scale_i, yi) = mag_arg(self, zi, mi);
        cheb_with_deriv(yi, &mut sc.psi_i, &mut sc.dpsi_i);
        for b in 0..m_ {
            sc.dpsi_i[b] *= psi_scale_i;
        }
        // contract the central atom's magnetic index: ceff[zj][mu][zeta][gamma]
        let block = kr * p_ * m_ * m_;
        for zj in 0..c_ {
            let base = (zi * c_ + zj) * block;
            for mu in 0..kr {
                for zeta in 0..p_ {
                    let cb = base + (mu * p_ + zeta) * m_ * m_;
                    let o = ((zj * kr + mu) * p_ + zeta) * m_;
                    for g in 0..m_ {
                        let mut s0 = 0.0;
                        let mut s1 = 0.0;
                        for b in 0..m_ {
                            let c = self.params[cb + b * m_ + g];
                            s0 += c * sc.psi_i[b];
                            s1 += c * sc.dpsi_i[b];
                        }
                        sc.ceff[o + g] = s0;
                        sc.ceffd[o + g] = s1;
                    }
                }
            }
        }

        let rc = self.max_dist;
        let rmin = self.min_dist;
        let xs = 2.0 / (rc - rmin);
        let mut tbuf = [0.0f64; 64];
        let mut dtbuf = [0.0f64; 64];
        let mut pj = [0.0f64; 64];
        let mut dpj = [0.0f64; 64];
        for (n, k) in range.clone().enumerate() {
            let v = nl.vec[k];
            let j = nl.index[k];
            let zj = cfg.types[j];
            let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            let x = (2.0 * r - (rmin + rc)) / (rc - rmin);
            let t = &mut tbuf[..p_];
            let dt = &mut dtbuf[..p_];
            cheb_with_deriv(x, t, dt);
            let d = rc - r;
            let phi = &mut sc.phi[n * p_..(n + 1) * p_];
            let dphi = &mut sc.dphi[n * p_..(n + 1) * p_];
            for z in 0..p_ {
                phi[z] = self.scaling * t[z] * d * d;
                dphi[z] = self.scaling * (dt[z] * xs * d * d - 2.0 * t[z] * d);
            }
            let mj = sign * cfg.moments[j];
            let (sj, yj) = mag_arg(self, zj, mj);
            cheb_with_deriv(yj, &mut pj[..m_], &mut dpj[..m_]);
            for g in 0..m_ {
                dpj[g] *= sj;
            }
            sc.psi_j[n * m_..(n + 1) * m_].copy_from_slice(&pj[..m_]);
            // radial functions and their derivatives
            for mu in 0..kr {
                let o = ((zj * kr + mu) * p_) * m_;
                let (mut f, mut fr, mut fmj, mut fmi) = (0.0, 0.0, 0.0, 0.0);
                for z in 0..p_ {
                    let ce = &sc.ceff[o + z * m_..o + (z + 1) * m_];
                    let cd = &sc.ceffd[o + z * m_..o + (z + 1) * m_];
                    let (mut a, mut ad, mut am) = (0.0, 0.0, 0.0);
                    for g in 0..m_ {
                        a += ce[g] * pj[g];
                        ad += ce[g] * dpj[g];
                        am += cd[g] * pj[g];
                    }
                    f += phi[z] * a;
                    fr += dphi[z] * a;
                    fmj += phi[z] * ad;
                    fmi += phi[z] * am;
                }
                sc.f[n * kr + mu] = f;
                sc.fr[n * kr + mu] = fr;
                sc.fmj[n * kr + mu] = fmj;
                sc.fmi[n * kr + mu] = fmi;
            }
            // angular monomials and their gradients
            let inv_r = 1.0 / r;
            let u = [v[0] * inv_r, v[1] * inv_r, v[2] * inv_r];
            let mp = self.max_pow;
            let mut pw = [[1.0f64; 32]; 3];
            for a in 0..3 {
                for e in 1..=mp {
                    pw[a][e] = pw[a][e - 1] * u[a];
                }
            }
            let mono = &mut sc.mono[n * nmono..(n + 1) * nmono];
            let dmono = &mut sc.dmono[n * nmono * 3..(n + 1) * nmono * 3];
            for (q, e) in self.monos.iter().enumerate() {
                let val = pw[0][e[0]] * pw[1][e[1]] * pw[2][e[2]];
                mono[q] = val;
                let deg = (e[0] + e[1] + e[2]) as f64;
                for a in 0..3 {
                    let ea = e[a];
                    let part = if ea == 0 {
                        0.0
                    } else {
                        let mut p = ea as f64;
                        for b in 0..3 {
                            p *= if b == a { pw[b][ea - 1] } else { pw[b][e[b]] };
                        }
                        p
                    };
                    dmono[q * 3 + a] = (part - deg * val * u[a]) * inv_r;
                }
            }
        }
        // basic moments
        let mom = &mut sc.moments;
        for x in mom.iter_mut() {
            *x = 0.0;
        }
        for n in 0..nn {
            let f = &sc.f[n * kr..(n + 1) * kr];
            let mono = &sc.mono[n * nmono..(n + 1) * nmono];
            for k in 0..nbasic {
                mom[k] += f[self.basic_mu[k]] * mono[self.basic_mono[k]];
            }
        }
        for &(a, b, mult, k) in &self.tables.times {
            mom[k] += mult * mom[a] * mom[b];
        }
        let xi = &self.params[self.moment_offset()..];
        let mut site = self.params[self.species_offset() + zi];
        for (al, &s) in self.tables.scalars.iter().enumerate() {
            site += xi[al] * mom[s];
        }
        acc.site[i] += w * site;
        let want_grad = opts.param_grad;
        if want_grad {
            let so = self.species_offset();
            let mo = self.moment_offset();
            acc.grad[so + zi] += w;
            for (al, &s) in self.tables.scalars.iter().enumerate() {
                acc.grad[mo + al] += w * mom[s];
            }
        }
        if !opts.forces && !want_grad {
            return;
        }
        // adjoints
        let dm = &mut sc.dmom;
        for x in dm.iter_mut() {
            *x = 0.0;
        }
        for (al, &s) in self.tables.scalars.iter().enumerate() {
            dm[s] += xi[al];
        }
        for &(a, b, mult, k) in self.tables.times.iter().rev() {
            let g = dm[k] * mult;
            if g != 0.0 {
                dm[a] += g * mom[b];
                dm[b] += g * mom[a];
            }
        }
        let mut dedmi = 0.0;
        let mut g = [0.0f64; 64];
        for (n, k) in range.enumerate() {
            let v = nl.vec[k];
            let j = nl.index[k];
            let zj = cfg.types[j];
            let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            let mono = &sc.mono[n * nmono..(n + 1) * nmono];
            let dmono = &sc.dmono[n * nmono * 3..(n + 1) * nmono * 3];
            let f = &sc.f[n * kr..(n + 1) * kr];
            for x in g[..kr].iter_mut() {
                *x = 0.0;
            }
            let mut gv = [0.0f64; 3];
            for kb in 0..nbasic {
                let a = dm[kb];
                let q = self.basic_mono[kb];
                let mu = self.basic_mu[kb];
                g[mu] += a * mono[q];
                let af = a * f[mu];
                gv[0] += af * dmono[q * 3];
                gv[1] += af * dmono[q * 3 + 1];
                gv[2] += af * dmono[q * 3 + 2];
            }
            let mut gr = 0.0;
            let mut gmj = 0.0;
            for mu in 0..kr {
                gr += g[mu] * sc.fr[n * kr + mu];
                gmj += g[mu] * sc.fmj[n * kr + mu];
                dedmi += g[mu] * sc.fmi[n * kr + mu];
            }
            let inv_r = 1.0 / r;
            for a in 0..3 {
                gv[a] += gr * v[a] * inv_r;
            }
            // dE/dr_j += dV/dv ; dE/dr_i -= dV/dv
            for a in 0..3 {
                acc.dedr[j][a] += w * gv[a];
                acc.dedr[i][a] -= w * gv[a];
                for b in 0..3 {
                    acc.virial[a][b] -= w * gv[a] * v[b];
                }
            }
            acc.dedm[j] += w * sign * gmj;
            if want_grad {
                let phi = &sc.phi[n * p_..(n + 1) * p_];
                let pj = &sc.psi_j[n * m_..(n + 1) * m_];
                let base = (zi * c_ + zj) * block;
                for mu in 0..kr {
                    let gm = w * g[mu];
                    if gm == 0.0 {
                        continue;
                    }
                    for z in 0..p_ {
                        let gz = gm * phi[z];
                        let cb = base + (mu * p_ + z) * m_ * m_;
                        for b in 0..m_ {
                            let gb = gz * sc.psi_i[b];
                            for gg in 0..m_ {
                                acc.grad[cb + b * m_ + gg] += gb * pj[gg];
                            }
                        }
                    }
                }
            }
        }
        acc.dedm[i] += w * sign * dedmi;
    }
}

#[inline]
fn mag_arg(p: &Potential, z: usize, m: f64) -> (f64, f64) {
    if p.n_psi == 1 {
        return (0.0, 0.0);
    }
    let (lo, hi) = (p.mag_lo[z], p.mag_hi[z]);
    let s = 2.0 / (hi - lo);
    (s, (2.0 * m - (lo + hi)) / (hi - lo))
}

struct Acc {
    site: Vec<f64>,
    dedr: Vec<[f64; 3]>,
    dedm: Vec<f64>,
    virial: [[f64; 3]; 3],
    grad: Vec<f64>,
}

impl Acc {
    fn new(n: usize, np: usize) -> Self {
        Acc { site: vec![0.0; n], dedr: vec![[0.0; 3]; n], dedm: vec![0.0; n], virial: [[0.0; 3]; 3], grad: vec![0.0; np] }
    }
    fn add(&mut self, o: &Acc) {
        for (a, b) in self.site.iter_mut().zip(&o.site) {
            *a += b;
        }
        for (a, b) in self.dedr.iter_mut().zip(&o.dedr) {
            a[0] += b[0];
            a[1] += b[1];
            a[2] += b[2];
        }
        for (a, b) in self.dedm.iter_mut().zip(&o.dedm) {
            *a += b;
        }
        for a in 0..3 {
            for b in 0..3 {
                self.virial[a][b] += o.virial[a][b];
            }
        }
        for (a, b) in self.grad.iter_mut().zip(&o.grad) {
            *a += b;
        }
    }
}

struct Scratch {
    cap: usize,
    psi_i: Vec<f64>,
    dpsi_i: Vec<f64>,
    ceff: Vec<f64>,
    ceffd: Vec<f64>,
    phi: Vec<f64>,
    dphi: Vec<f64>,
    psi_j: Vec<f64>,
    f: Vec<f64>,
    fr: Vec<f64>,
    fmj: Vec<f64>,
    fmi: Vec<f64>,
    mono: Vec<f64>,
    dmono: Vec<f64>,
    moments: Vec<f64>,
    dmom: Vec<f64>,
}

impl Scratch {
    fn new(p: &Potential) -> Self {
        let cm = p.n_species * p.n_radial * p.n_phi * p.n_psi;
        Scratch {
            cap: 0,
            psi_i: vec![0.0; p.n_psi],
            dpsi_i: vec![0.0; p.n_psi],
            ceff: vec![0.0; cm],
            ceffd: vec![0.0; cm],
            phi: vec![],
            dphi: vec![],
            psi_j: vec![],
            f: vec![],
            fr: vec![],
            fmj: vec![],
            fmi: vec![],
            mono: vec![],
            dmono: vec![],
            moments: vec![0.0; p.tables.n_moments],
            dmom: vec![0.0; p.tables.n_moments],
        }
    }
    fn ensure(&mut self, nn: usize, p: &Potential) {
        if nn <= self.cap {
            return;
        }
        let nn = nn.max(2 * self.cap);
        self.cap = nn;
        let (kr, pp, mm, nm) = (p.n_radial, p.n_phi, p.n_psi, p.monos.len());
        self.phi.resize(nn * pp, 0.0);
        self.dphi.resize(nn * pp, 0.0);
        self.psi_j.resize(nn * mm, 0.0);
        self.f.resize(nn * kr, 0.0);
        self.fr.resize(nn * kr, 0.0);
        self.fmj.resize(nn * kr, 0.0);
        self.fmi.resize(nn * kr, 0.0);
        self.mono.resize(nn * nm, 0.0);
        self.dmono.resize(nn * nm * 3, 0.0);
    }
}
