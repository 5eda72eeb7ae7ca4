//! Metropolis Monte Carlo of collinear moments at fixed positions.
//!
//! Moves: a sign flip `m_i -> -m_i`, or a magnitude move
//! `|m_i| -> |m_i| + delta`, `delta` uniform in `[-step_i, step_i]`,
//! reflected into `[0, M_max_i]` with the sign kept. Both proposals are
//! symmetric, so the Metropolis rule samples `exp(-beta E(m)) dm` (flat
//! measure in the signed collinear moment) of the (optionally spin-inversion
//! symmetrised) mMTP energy.
//!
//! Local updates. The moment of atom `i` enters the site energy of `i`
//! (through `psi_beta(m_i)`) and of every `j` that has `i` among its
//! neighbours (through `psi_gamma(m_i)` in `f_mu(r_ji)`). For every atom `j`
//! and sign `s` of the symmetrisation the sampler caches the basic moments
//! `M^s(j)[q]` and the partial sums
//! `A^s_beta(j)[q] = sum_k sum_gamma R_k[mu_q beta gamma] psi_gamma(s m_k) mono_q(rhat_jk)`
//! for `beta >= 1` (`R_k = sum_zeta c phi_zeta(r_jk)`, `q` a basic moment;
//! `M^s(j) = sum_beta psi_beta(s m_j) A^s_beta(j)`, and `psi_0 = 1`). A move
//! of `m_i` changes the basic moments of a neighbour `j` only through the
//! pair term `j -> i`, which is linear in `psi_gamma(m_i)`: per entry the new
//! moments are `M^s(j) + W^s[mu_q] mono_q(rhat_ji)`, a rank-one update with
//! `W^s[mu] = sum_beta psi_beta(s m_j) sum_gamma R[mu beta gamma] dpsi^s_gamma`.
//! The moved atom's own moments change by `sum_{beta >= 1} dpsi^s_beta A^s_beta(i)`.
//! The new site energies then need only the basis polynomial (the `times`
//! table), evaluated for 8 affected atoms x 2 signs at once in SIMD lanes; no
//! neighbour sum is redone. On acceptance the cached moments are updated with
//! the same arithmetic (bit for bit the accepted ones) and the partial sums
//! take the pair change. A sweep of N moves costs about three energy-only
//! evaluations (512-atom CrN, level 16, one thread:
//! `benches/bench_montecarlo.py`), half of it in the `times` table of the
//! ~60 affected atoms x 2 signs.
//!
//! Determinism: moves are attempted one after the other with one seeded
//! ChaCha stream, so trajectories are identical at any thread count (only
//! the construction of the partial sums runs in parallel, atom by atom).

use crate::chebyshev::cheb_with_deriv;
use crate::error::{MmtpError, Result};
use crate::model::{Config, Potential};
use crate::neighbors::NeighborList;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Boltzmann constant (eV/K), as in ASE.
pub const KB_EV: f64 = 8.617333262e-5;

/// Counts of one or more sweeps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SweepStats {
    /// Attempted sign flips.
    pub flips_tried: usize,
    /// Accepted sign flips.
    pub flips_accepted: usize,
    /// Attempted magnitude moves.
    pub mags_tried: usize,
    /// Accepted magnitude moves.
    pub mags_accepted: usize,
}

/// The outcome of one attempted move.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoveResult {
    /// Atom moved.
    pub atom: usize,
    /// Whether the move was a sign flip.
    pub flip: bool,
    /// Whether it was accepted.
    pub accepted: bool,
    /// Energy change of the proposal (eV).
    pub delta_e: f64,
    /// Moment of the atom after the attempt (μB).
    pub moment: f64,
}

/// Monte-Carlo sampler of the moments of one configuration (positions fixed).
#[derive(Clone, Debug)]
pub struct SpinSampler {
    pot: Potential,
    types: Vec<usize>,
    signs: Vec<f64>,
    /// symmetrised with symmetric magnetic intervals: psi_gamma(-m) =
    /// (-1)^gamma psi_gamma(m), the second sign by a sign flip
    parity: bool,
    weight: f64,
    /// number of basic moments
    nb: usize,
    /// (mu, first monomial, length, first basic moment) of the runs of
    /// basic moments with one mu and consecutive monomials (internal order)
    mu_blocks: Vec<(usize, usize, usize, usize)>,
    /// the `times` table as runs of one target moment: (k, first entry, end, first run of k)
    runs: Vec<(usize, usize, usize, bool)>,
    /// the `times` entries (a, b, mult) in table order; here and in
    /// `scalars` the basic moments are renumbered to the internal order, so
    /// that basic moment q is row q of the moment rows
    times: Vec<(usize, usize, f64)>,
    scalars: Vec<usize>,
    /// moment rows of a block (see [`compact_rows`])
    n_rows: usize,
    /// per entry of `rev_entry` (the entries j -> i of each atom i, stored
    /// contiguously so that a move reads them in one sweep of memory):
    /// R[mu][beta][gamma]
    rad: Vec<f64>,
    /// per entry of `rev_entry`: unit vector r_hat (the monomials are
    /// recomputed: cheaper than reading them from memory)
    unit: Vec<[f64; 3]>,
    /// number of angular monomials (every degree up to the largest used)
    n_monos: usize,
    /// CSR over atoms i: the atoms whose site energy depends on m_i (i first)
    aff_off: Vec<usize>,
    aff_atoms: Vec<usize>,
    /// CSR over the slots of `aff_atoms`: the entries j -> i of each
    /// affected atom j (indices into `rad` and `unit`)
    slot_off: Vec<usize>,
    moments: Vec<f64>,
    m_max: Vec<f64>,
    /// partial sums A[j][s][beta][q] for beta >= 1 (psi_0 = 1 is constant)
    a: Vec<f64>,
    /// current basic moments M[j][s][q] = sum_beta psi_beta(s m_j) A[j][s][beta][q]
    bm: Vec<f64>,
    site: Vec<f64>,
    rng: ChaCha8Rng,
    // scratch of the last proposal: new site energies of the affected
    // atoms, change of psi_gamma(s m_i)
    new_site: Vec<f64>,
    dpsi: [[f64; 64]; 2],
    work: Work,
}

/// (atom, sign) pairs whose basis polynomials are evaluated together, one
/// SIMD lane each; a block of `LANES / n_signs` affected atoms is also the
/// unit of parallel work of a move with very many affected atoms.
const LANES: usize = 16;

/// Blocks of affected atoms above which one move is split between threads.
const PAR_MIN_BLOCKS: usize = 32;

/// One moment row: LANES values, aligned to cache lines (an unaligned row
/// would cost split loads in the `times` loop, and make the speed depend on
/// where the allocator put the buffer).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Row([f64; LANES]);

impl std::ops::Deref for Row {
    type Target = [f64; LANES];
    #[inline(always)]
    fn deref(&self) -> &[f64; LANES] {
        &self.0
    }
}

impl std::ops::DerefMut for Row {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [f64; LANES] {
        &mut self.0
    }
}

/// Scratch of one block of site energies.
#[derive(Clone, Debug, Default)]
struct Work {
    /// all moments, one row of LANES per moment
    mom: Vec<Row>,
    /// monomials of one neighbour entry
    mk: Vec<f64>,
    /// basic moments of one atom, every sign
    x: Vec<f64>,
}

/// The composite moments over the `times` runs: `mom[k] += mult * mom[a] *
/// mom[b]` in table order, on every lane, with the target row kept in
/// registers over each run (one load and store per run, not per entry).
#[inline(always)]
fn times_body(runs: &[(usize, usize, usize, bool)], times: &[(usize, usize, f64)], mom: &mut [Row]) {
    for &(k, s, e, first) in runs {
        // SAFETY: compact_rows made every row index < n_rows = mom.len()
        // (checked there); the runs cover 0..times.len()
        unsafe {
            let mut acc = if first { [0.0; LANES] } else { mom.get_unchecked(k).0 };
            for &(a, b, mult) in times.get_unchecked(s..e) {
                let ra = mom.get_unchecked(a);
                let rb = mom.get_unchecked(b);
                // fused multiply-add: exact rounding on every code path
                for l in 0..LANES {
                    acc[l] = (ra[l] * mult).mul_add(rb[l], acc[l]);
                }
            }
            *mom.get_unchecked_mut(k) = Row(acc);
        }
    }
}

/// Rows of the moments in a block: basic moment q stays in row q; a
/// composite moment takes a row when its first run starts, and every row is
/// given back after the last run that reads or writes its moment (scalar
/// moments are kept to the end), so that dead rows are reused. This shrinks
/// the block's working set (level 16: 220 rows for 350 moments) without
/// changing any arithmetic. Returns the number of rows and the tables in row
/// indices.
#[allow(clippy::type_complexity)]
fn compact_rows(
    nb: usize,
    n_moments: usize,
    times: Vec<(usize, usize, f64)>,
    runs: Vec<(usize, usize, usize, bool)>,
    scalars: Vec<usize>,
) -> (usize, Vec<(usize, usize, f64)>, Vec<(usize, usize, usize, bool)>, Vec<usize>) {
    let nr = runs.len();
    // last run touching each moment (nr: needed at the end)
    let mut last = vec![None; n_moments];
    for (r, &(k, s, e, _)) in runs.iter().enumerate() {
        last[k] = Some(r);
        for &(a, b, _) in &times[s..e] {
            last[a] = Some(r);
            last[b] = Some(r);
        }
    }
    for &sc in &scalars {
        last[sc] = Some(nr);
    }
    let mut expire = vec![Vec::new(); nr + 1];
    for (q, l) in last.iter().enumerate() {
        if let Some(r) = *l {
            expire[r].push(q);
        }
    }
    let mut place: Vec<Option<usize>> = (0..n_moments).map(|q| if q < nb { Some(q) } else { None }).collect();
    let mut free = Vec::new();
    let mut n_rows = nb;
    for (r, &(k, ..)) in runs.iter().enumerate() {
        if place[k].is_none() {
            place[k] = Some(free.pop().unwrap_or_else(|| {
                n_rows += 1;
                n_rows - 1
            }));
        }
        for &q in &expire[r] {
            if let Some(p) = place[q] {
                free.push(p);
            }
        }
    }
    // every moment read has a row: a basic one, or one written by an earlier run
    let row = |q: usize| place[q].expect("internal: a moment is read before it is computed");
    let times: Vec<(usize, usize, f64)> = times.iter().map(|&(a, b, m)| (row(a), row(b), m)).collect();
    let runs: Vec<(usize, usize, usize, bool)> = runs.iter().map(|&(k, s, e, f)| (row(k), s, e, f)).collect();
    let scalars: Vec<usize> = scalars.iter().map(|&q| row(q)).collect();
    assert!(times.iter().all(|&(a, b, _)| a < n_rows && b < n_rows) && runs.iter().all(|r| r.0 < n_rows) && scalars.iter().all(|&q| q < n_rows));
    (n_rows, times, runs, scalars)
}

impl SpinSampler {
    /// Build the sampler for `cfg` (checked against the potential). `m_max`
    /// bounds the magnitude of each atom's moment; atoms with `m_max == 0`
    /// are never moved (their moments still enter the energy).
    pub fn new(pot: &Potential, cfg: &Config, m_max: &[f64], symmetrize: bool, seed: u64) -> Result<Self> {
        pot.check_config(cfg)?;
        let n = cfg.positions.len();
        if m_max.len() != n {
            return Err(MmtpError::Shape(format!("{} moment bounds for {n} atoms", m_max.len())));
        }
        if let Some(i) = m_max.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(MmtpError::Value(format!("moment bound of atom {i} must be finite and >= 0, got {}", m_max[i])));
        }
        if let Some(i) = (0..n).find(|&i| cfg.moments[i].abs() > m_max[i] && m_max[i] > 0.0) {
            return Err(MmtpError::Value(format!(
                "moment of atom {i} ({} μB) is outside its bound [-{}, {}]",
                cfg.moments[i], m_max[i], m_max[i]
            )));
        }
        let nl = pot.neighbors(cfg)?;
        let lay = &pot.layout;
        let nb = lay.perm.len();
        // entry_monos builds degree nu from degree nu - 1 as x * (all of it),
        // y * (its last nu), z * (its last one): the layout's order
        let mut expect = vec![[0usize; 3]];
        for nu in 1..=lay.max_pow {
            let prev: Vec<[usize; 3]> = expect.iter().filter(|e| e[0] + e[1] + e[2] == nu - 1).copied().collect();
            expect.extend(prev.iter().map(|e| [e[0] + 1, e[1], e[2]]));
            expect.extend(prev[prev.len() - nu..].iter().map(|e| [e[0], e[1] + 1, e[2]]));
            expect.push([0, 0, nu]);
        }
        if expect != lay.monos {
            return Err(MmtpError::Potential("internal: unexpected order of the angular monomials".into()));
        }
        // basic moment rows renumbered to the internal order
        let mut row = (0..pot.tables.n_moments).collect::<Vec<usize>>();
        for (q, &kb) in lay.perm.iter().enumerate() {
            row[kb] = q;
        }
        let (c_, kr, p_, m_) = (pot.n_species, pot.n_radial, pot.n_phi, pot.n_psi);
        let kmm = kr * m_ * m_;
        let block = kr * p_ * m_ * m_;
        let ne = nl.n_pairs();
        let mut rad = vec![0.0; ne * kmm];
        let mut unit = vec![[0.0; 3]; ne];
        let (rc, rmin) = (pot.max_dist, pot.min_dist);
        let xs = 2.0 / (rc - rmin);
        let x0 = (rmin + rc) / (rc - rmin);
        rad.par_chunks_mut(kmm).zip(unit.par_iter_mut()).enumerate().for_each(|(k, (rk, uk))| {
            // source atom of entry k
            let j = nl.offsets.partition_point(|&o| o <= k) - 1;
            let zi = cfg.types[j];
            let zj = cfg.types[nl.index[k]];
            let v = nl.vec[k];
            let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            let u = [v[0] / r, v[1] / r, v[2] / r];
            let x = r * xs - x0;
            let d = rc - r;
            let mut t = vec![0.0; p_];
            let mut dt = vec![0.0; p_];
            cheb_with_deriv(x, &mut t, &mut dt);
            let cpair = &pot.ct[(zi * c_ + zj) * block..(zi * c_ + zj + 1) * block];
            for z in 0..p_ {
                let phi = t[z] * d * d * pot.scaling;
                for q in 0..kmm {
                    rk[q] += cpair[z * kmm + q] * phi;
                }
            }
            *uk = u;
        });
        // reverse lists: for each i, the entries k (source j) with index[k] == i
        let mut rev: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        for j in 0..n {
            for k in nl.range(j) {
                rev[nl.index[k]].push((j, k));
            }
        }
        let (mut aff_off, mut aff_atoms) = (vec![0], Vec::new());
        let (mut slot_off, mut rev_entry) = (vec![0], Vec::new());
        for (i, list) in rev.iter_mut().enumerate() {
            list.sort();
            // slot 0: the atom itself (its own psi_beta, and self-image entries)
            aff_atoms.push(i);
            rev_entry.extend(list.iter().filter(|e| e.0 == i).map(|e| e.1));
            slot_off.push(rev_entry.len());
            let mut last = usize::MAX;
            for &(j, k) in list.iter().filter(|e| e.0 != i) {
                if j != last {
                    if last != usize::MAX {
                        slot_off.push(rev_entry.len());
                    }
                    aff_atoms.push(j);
                    last = j;
                }
                rev_entry.push(k);
            }
            if last != usize::MAX {
                slot_off.push(rev_entry.len());
            }
            aff_off.push(aff_atoms.len());
        }
        let signs = if symmetrize { vec![1.0, -1.0] } else { vec![1.0] };
        let weight = 1.0 / signs.len() as f64;
        let ns = signs.len();
        let max_aff = (0..n).map(|i| aff_off[i + 1] - aff_off[i]).max().unwrap_or(0);
        // the times table as runs of one target moment
        let times: Vec<(usize, usize, f64)> = pot.tables.times.iter().map(|&(a, b, m, _)| (row[a], row[b], m)).collect();
        let scalars: Vec<usize> = pot.tables.scalars.iter().map(|&sc| row[sc]).collect();
        let mut runs = Vec::new();
        let mut seen = vec![false; pot.tables.n_moments];
        let mut t0 = 0;
        for t in 1..=times.len() {
            let k = pot.tables.times[t0].3;
            if t == times.len() || pot.tables.times[t].3 != k {
                runs.push((k, t0, t, !seen[k]));
                seen[k] = true;
                t0 = t;
            }
        }
        let (n_rows, times, runs, scalars) = compact_rows(nb, pot.tables.n_moments, times, runs, scalars);
        let mut s = SpinSampler {
            pot: pot.clone(),
            types: cfg.types.clone(),
            parity: symmetrize && pot.parity_symmetric(),
            signs,
            weight,
            nb,
            mu_blocks: lay.blocks.clone(),
            runs,
            times,
            scalars,
            n_rows,
            rad: rev_entry.iter().flat_map(|&k| rad[k * kmm..(k + 1) * kmm].iter().copied()).collect(),
            unit: rev_entry.iter().map(|&k| unit[k]).collect(),
            n_monos: lay.monos.len(),
            aff_off,
            aff_atoms,
            slot_off,
            moments: cfg.moments.clone(),
            m_max: m_max.to_vec(),
            a: vec![0.0; n * ns * (m_ - 1) * nb],
            bm: vec![0.0; n * ns * nb],
            site: vec![0.0; n],
            rng: ChaCha8Rng::seed_from_u64(seed),
            new_site: vec![0.0; max_aff],
            dpsi: [[0.0; 64]; 2],
            work: Work::default(),
        };
        s.rebuild(&nl, &rad, &unit);
        Ok(s)
    }

    /// Number of atoms.
    pub fn n_atoms(&self) -> usize {
        self.types.len()
    }
    /// Current moments (μB).
    pub fn moments(&self) -> &[f64] {
        &self.moments
    }
    /// Bound of each atom's |moment| (μB; 0: never moved).
    pub fn m_max(&self) -> &[f64] {
        &self.m_max
    }
    /// Current site energies (eV).
    pub fn site_energies(&self) -> &[f64] {
        &self.site
    }
    /// Current total energy (eV).
    pub fn energy(&self) -> f64 {
        self.site.iter().sum()
    }
    /// Number of atoms whose energy depends on the moment of atom `i` (with `i`).
    pub fn n_affected(&self, i: usize) -> usize {
        self.aff_off[i + 1] - self.aff_off[i]
    }

    /// Recompute every partial sum, basic moment and site energy from the
    /// moments (removes the round-off accumulated by many updates).
    fn rebuild(&mut self, nl: &NeighborList, rad: &[f64], unit: &[[f64; 3]]) {
        let n = self.n_atoms();
        let (ns, m_, nb) = (self.signs.len(), self.pot.n_psi, self.nb);
        let kmm = self.pot.n_radial * m_ * m_;
        let per = ns * (m_ - 1) * nb;
        let this = &*self;
        let mut a = vec![0.0; n * per];
        let mut bm = vec![0.0; n * ns * nb];
        a.par_chunks_mut(per.max(1)).zip(bm.par_chunks_mut((ns * nb).max(1))).enumerate().for_each(|(j, (aj_kept, bj))| {
            let mut aj = vec![0.0; ns * m_ * nb];
            let mut pg = vec![0.0; m_];
            let mut mk = vec![0.0; this.n_monos];
            for k in nl.range(j) {
                let i = nl.index[k];
                this.entry_monos(unit[k], &mut mk);
                for (si, &s) in this.signs.iter().enumerate() {
                    this.psi(i, this.moments[i] * s, &mut pg);
                    let rk = &rad[k * kmm..(k + 1) * kmm];
                    for b in 0..m_ {
                        let dst = &mut aj[(si * m_ + b) * nb..(si * m_ + b + 1) * nb];
                        for &(mu, ms, len, bs) in &this.mu_blocks {
                            let mut w = 0.0;
                            for g in 0..m_ {
                                w += rk[(mu * m_ + b) * m_ + g] * pg[g];
                            }
                            for (d, &mq) in dst[bs..bs + len].iter_mut().zip(&mk[ms..ms + len]) {
                                *d += w * mq;
                            }
                        }
                    }
                }
            }
            for (si, &s) in this.signs.iter().enumerate() {
                this.psi(j, this.moments[j] * s, &mut pg);
                this.combine(&aj[si * m_ * nb..(si + 1) * m_ * nb], &pg, &mut bj[si * nb..(si + 1) * nb]);
                aj_kept[si * (m_ - 1) * nb..(si + 1) * (m_ - 1) * nb].copy_from_slice(&aj[(si * m_ + 1) * nb..(si + 1) * m_ * nb]);
            }
        });
        self.a = a;
        self.bm = bm;
        let bs = self.block_atoms();
        let mut site = std::mem::take(&mut self.site);
        let this = &*self;
        site.par_chunks_mut(bs).enumerate().for_each_init(Work::default, |w, (c, out)| {
            let atoms: Vec<usize> = (c * bs..c * bs + out.len()).collect();
            for (t, &j) in atoms.iter().enumerate() {
                for si in 0..ns {
                    this.scatter(&this.bm[(j * ns + si) * nb..(j * ns + si + 1) * nb], t * ns + si, &mut w.mom);
                }
            }
            this.energy_block(&atoms, out, &mut w.mom);
        });
        self.site = site;
    }

    /// `x = sum_beta psi[beta] A[beta]` (A: n_psi rows of nb basic moments).
    #[inline(always)]
    fn combine(&self, a: &[f64], psi: &[f64], x: &mut [f64]) {
        let nb = self.nb;
        x.copy_from_slice(&a[..nb]);
        for (b, &c) in psi.iter().enumerate() {
            if b == 0 {
                for xq in x.iter_mut() {
                    *xq *= c;
                }
                continue;
            }
            for (xq, &aq) in x.iter_mut().zip(&a[b * nb..(b + 1) * nb]) {
                *xq += c * aq;
            }
        }
    }

    /// Write basic moments `x` (internal order) into lane `lane` of the moment rows.
    #[inline(always)]
    fn scatter(&self, x: &[f64], lane: usize, mom: &mut Vec<Row>) {
        if mom.len() != self.n_rows {
            mom.clear();
            mom.resize(self.n_rows, Row([0.0; LANES]));
        }
        debug_assert!(x.len() == self.nb && lane < LANES);
        for (r, &xq) in mom[..x.len()].iter_mut().zip(x) {
            r[lane] = xq;
        }
    }

    /// psi_gamma(m) of atom i's species (1, 0, ... without a magnetic
    /// basis): the values of [`cheb_with_deriv`], same arithmetic, without
    /// the derivatives. With a symmetric interval psi_gamma(-m) is exactly
    /// (-1)^gamma psi_gamma(m) (the argument and the recursion only change
    /// sign), which [`Self::psi_flip`] uses.
    #[inline(always)]
    fn psi(&self, i: usize, m: f64, out: &mut [f64]) {
        let p = &self.pot;
        let n = out.len();
        out[0] = 1.0;
        if n == 1 {
            return;
        }
        let z = self.types[i];
        let (lo, hi) = (p.mag_lo[z], p.mag_hi[z]);
        let y = (2.0 * m - (lo + hi)) / (hi - lo);
        out[1] = y;
        let y2 = y * 2.0;
        for k in 1..n - 1 {
            out[k + 1] = y2 * out[k] - out[k - 1];
        }
    }

    /// psi_gamma(-m) from psi_gamma(m), in place (with `self.parity`).
    #[inline(always)]
    fn psi_flip(out: &mut [f64]) {
        for v in out.iter_mut().skip(1).step_by(2) {
            *v = -*v;
        }
    }

    /// Site energies of the atoms `atoms[t]` (at most `LANES / n_signs`),
    /// whose basic moments are in the lanes `t * n_signs + s` of `mom`, into
    /// `out[t]`. The basis polynomial runs on all (atom, sign) pairs at once,
    /// one SIMD lane each (structure of arrays over the lanes).
    fn energy_block(&self, atoms: &[usize], out: &mut [f64], mom: &mut [Row]) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd_available() {
            // SAFETY: simd_available() is true only when the CPU has AVX2 and FMA.
            unsafe { self.energy_block_avx2(atoms, out, mom) };
            return;
        }
        self.energy_block_body(atoms, out, mom)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn energy_block_avx2(&self, atoms: &[usize], out: &mut [f64], mom: &mut [Row]) {
        self.energy_block_body(atoms, out, mom)
    }

    #[inline(always)]
    fn energy_block_body(&self, atoms: &[usize], out: &mut [f64], mom: &mut [Row]) {
        let p = &self.pot;
        let ns = self.signs.len();
        // basic rows hold the lanes in use (other lanes keep finite stale
        // values, never read); every composite row is set by its first run
        times_body(&self.runs, &self.times, mom);
        let xi = &p.params()[p.moment_offset()..];
        let mut acc = [0.0; LANES];
        for (al, &sc) in self.scalars.iter().enumerate() {
            let x = xi[al];
            let row = &mom[sc];
            for l in 0..LANES {
                acc[l] += x * row[l];
            }
        }
        for (t, &j) in atoms.iter().enumerate() {
            let s0 = p.params()[p.species_offset() + self.types[j]];
            let mut e = 0.0;
            for si in 0..ns {
                e += (s0 + acc[t * ns + si]) * self.weight;
            }
            out[t] = e;
        }
    }

    /// The angular monomials (layout order) of neighbour entry k.
    #[inline(always)]
    fn entry_monos(&self, u: [f64; 3], out: &mut [f64]) {
        out[0] = 1.0;
        let (mut p0, mut len) = (0, 1);
        for nu in 1..=self.pot.layout.max_pow {
            let (prev, rest) = out.split_at_mut(p0 + len);
            let prev = &prev[p0..];
            let (dx, rest) = rest.split_at_mut(len);
            for (d, &v) in dx.iter_mut().zip(prev) {
                *d = v * u[0];
            }
            let (dy, rest) = rest.split_at_mut(nu);
            for (d, &v) in dy.iter_mut().zip(&prev[len - nu..]) {
                *d = v * u[1];
            }
            rest[0] = prev[len - 1] * u[2];
            p0 += len;
            len += nu + 1;
        }
    }

    /// Atoms per block of [`Self::energy_block`].
    fn block_atoms(&self) -> usize {
        LANES / self.signs.len()
    }

    /// New site energies (into `out`) of the affected atoms in slots
    /// `slots` (at most one block) of a move of atom `i` to `new_m`, from
    /// their cached basic moments and [`Self::slot_moments`].
    fn propose_block(&self, i: usize, new_m: f64, slots: std::ops::Range<usize>, out: &mut [f64], w: &mut Work) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd_available() {
            // SAFETY: simd_available() is true only when the CPU has AVX2 and FMA.
            unsafe { self.propose_block_avx2(i, new_m, slots, out, w) };
            return;
        }
        self.propose_block_body(i, new_m, slots, out, w)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn propose_block_avx2(&self, i: usize, new_m: f64, slots: std::ops::Range<usize>, out: &mut [f64], w: &mut Work) {
        self.propose_block_body(i, new_m, slots, out, w)
    }

    #[inline(always)]
    fn propose_block_body(&self, i: usize, new_m: f64, slots: std::ops::Range<usize>, out: &mut [f64], w: &mut Work) {
        let (ns, nb) = (self.signs.len(), self.nb);
        let mut wmu = [[0.0f64; 64]; 2];
        if w.mk.len() != self.n_monos {
            w.mk = vec![0.0; self.n_monos];
        }
        w.x.resize(ns * nb, 0.0);
        if w.mom.len() != self.n_rows {
            w.mom.clear();
            w.mom.resize(self.n_rows, Row([0.0; LANES]));
        }
        let mut atoms = [0usize; LANES];
        for (t, slot) in slots.enumerate() {
            atoms[t] = self.aff_atoms[slot];
            if ns == 2 && atoms[t] != i && self.slot_off[slot + 1] == self.slot_off[slot] + 1 {
                // the common case, fused: one entry j -> i, both signs in adjacent lanes
                let j = atoms[t];
                let e = self.slot_off[slot];
                self.entry_monos(self.unit[e], &mut w.mk);
                self.entry_weights(j, self.moments[j], e, &mut wmu);
                let (bp, bn) = self.bm[j * 2 * nb..(j + 1) * 2 * nb].split_at(nb);
                for &(mu, ms, len, bs) in &self.mu_blocks {
                    let (cp, cn) = (wmu[0][mu], wmu[1][mu]);
                    for ((row, &mq), (&xp, &xn)) in w.mom[bs..bs + len].iter_mut().zip(&w.mk[ms..ms + len]).zip(bp[bs..bs + len].iter().zip(&bn[bs..bs + len])) {
                        let pair = [xp + cp * mq, xn + cn * mq];
                        row[2 * t..2 * t + 2].copy_from_slice(&pair);
                    }
                }
                continue;
            }
            let mut x = std::mem::take(&mut w.x);
            x.copy_from_slice(&self.bm[atoms[t] * ns * nb..(atoms[t] + 1) * ns * nb]);
            self.slot_moments(&self.a, i, new_m, slot, &mut w.mk, &mut x);
            for si in 0..ns {
                self.scatter(&x[si * nb..(si + 1) * nb], t * ns + si, &mut w.mom);
            }
            w.x = x;
        }
        let nat = out.len();
        self.energy_block_body(&atoms[..nat], out, &mut w.mom);
    }

    /// New basic moments `x` (every sign; on entry the current ones) of the
    /// atom in slot `slot` of a move of atom `i` to `new_m`. An affected atom
    /// j sees the move through its entries j -> i: per entry,
    /// `M^s(j) += mono_q W^s[mu_q]` with
    /// `W^s[mu] = sum_beta psi_beta(s m_j) sum_gamma R[mu beta gamma] dpsi^s_gamma`
    /// (m_j the new moment when j = i); the moved atom also changes its own
    /// psi_beta: `M^s(i) += sum_{beta >= 1} dpsi^s_beta A^s_beta(i)`. The
    /// proposal and the commit both call this, so that the committed basic
    /// moments are bit for bit those whose energy was accepted.
    #[inline(always)]
    fn slot_moments(&self, a: &[f64], i: usize, new_m: f64, slot: usize, mk: &mut [f64], x: &mut [f64]) {
        let (ns, m_, nb) = (self.signs.len(), self.pot.n_psi, self.nb);
        let mut wmu = [[0.0f64; 64]; 2];
        let j = self.aff_atoms[slot];
        let mj = if j == i { new_m } else { self.moments[j] };
        if j == i {
            for si in 0..ns {
                let xs = &mut x[si * nb..(si + 1) * nb];
                for b in 1..m_ {
                    let c = self.dpsi[si][b];
                    let ab = &a[((j * ns + si) * (m_ - 1) + b - 1) * nb..((j * ns + si) * (m_ - 1) + b) * nb];
                    for (xq, &aq) in xs.iter_mut().zip(ab) {
                        *xq += c * aq;
                    }
                }
            }
        }
        for e in self.slot_off[slot]..self.slot_off[slot + 1] {
            self.entry_monos(self.unit[e], mk);
            self.entry_weights(j, mj, e, &mut wmu);
            for si in 0..ns {
                let xs = &mut x[si * nb..(si + 1) * nb];
                for &(mu, ms, len, bs) in &self.mu_blocks {
                    let c = wmu[si][mu];
                    for (xq, &mq) in xs[bs..bs + len].iter_mut().zip(&mk[ms..ms + len]) {
                        *xq += c * mq;
                    }
                }
            }
        }
    }

    /// `W^s[mu] = sum_beta psi_beta(s m_j) sum_{gamma >= 1} R_e[mu beta gamma] dpsi^s_gamma`
    /// of entry `e` (j -> i) for the last proposal's dpsi, per sign.
    /// Only `wmu[s][..n_radial]` is written.
    #[inline(always)]
    fn entry_weights(&self, j: usize, mj: f64, e: usize, wmu: &mut [[f64; 64]; 2]) {
        let (m_, kr) = (self.pot.n_psi, self.pot.n_radial);
        let kmm = kr * m_ * m_;
        let rk = &self.rad[e * kmm..(e + 1) * kmm];
        let mut pb = [0.0; 64];
        for (si, &s) in self.signs.iter().enumerate() {
            if si == 1 && self.parity {
                Self::psi_flip(&mut pb[..m_]);
            } else {
                self.psi(j, mj * s, &mut pb[..m_]);
            }
            let d = &self.dpsi[si];
            for mu in 0..kr {
                let mut acc = 0.0;
                for b in 0..m_ {
                    let mut y = 0.0;
                    for g in 1..m_ {
                        // psi_0 = 1 never changes
                        y += rk[(mu * m_ + b) * m_ + g] * d[g];
                    }
                    acc += pb[b] * y;
                }
                wmu[si][mu] = acc;
            }
        }
    }

    /// Energy change (eV) of setting the moment of atom `i` to `new_m`; the
    /// new site energies stay in the scratch buffer. The affected sites are
    /// independent (computed in parallel only for very large neighbourhoods);
    /// the sum runs in a fixed order, so the result does not depend on the
    /// thread count.
    fn propose(&mut self, i: usize, new_m: f64) -> f64 {
        let m_ = self.pot.n_psi;
        let (a0, a1) = (self.aff_off[i], self.aff_off[i + 1]);
        let naff = a1 - a0;
        let mut p_old = [0.0; 64];
        let mut p_new = [0.0; 64];
        for (si, &s) in self.signs.iter().enumerate() {
            if si == 1 && self.parity {
                Self::psi_flip(&mut p_old[..m_]);
                Self::psi_flip(&mut p_new[..m_]);
            } else {
                self.psi(i, self.moments[i] * s, &mut p_old[..m_]);
                self.psi(i, new_m * s, &mut p_new[..m_]);
            }
            for g in 0..m_ {
                self.dpsi[si][g] = p_new[g] - p_old[g];
            }
        }
        let mut new_site = std::mem::take(&mut self.new_site);
        let mut work = std::mem::take(&mut self.work);
        let this = &*self;
        let bs = self.block_atoms();
        // a move of ~60 affected atoms takes tens of microseconds: splitting
        // it between threads costs more than it saves (measured on 2 cores);
        // only very large neighbourhoods are split
        if naff > PAR_MIN_BLOCKS * bs && crate::threads::num_threads() > 1 {
            new_site[..naff]
                .par_chunks_mut(bs)
                .enumerate()
                .for_each_init(Work::default, |w, (c, out)| this.propose_block(i, new_m, a0 + c * bs..a0 + c * bs + out.len(), out, w));
        } else {
            for (c, out) in new_site[..naff].chunks_mut(bs).enumerate() {
                this.propose_block(i, new_m, a0 + c * bs..a0 + c * bs + out.len(), out, &mut work);
            }
        }
        self.work = work;
        let mut de = 0.0;
        for l in 0..naff {
            de += new_site[l] - self.site[self.aff_atoms[a0 + l]];
        }
        self.new_site = new_site;
        de
    }

    /// Apply the last proposal for atom `i`: the basic moments of the
    /// affected atoms become the proposal's (same arithmetic), their partial
    /// sums take the change of their entries j -> i, their site energies the
    /// proposal's.
    fn commit(&mut self, i: usize, new_m: f64) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd_available() {
            // SAFETY: simd_available() is true only when the CPU has AVX2 and FMA.
            unsafe { self.commit_avx2(i, new_m) };
            return;
        }
        self.commit_body(i, new_m)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn commit_avx2(&mut self, i: usize, new_m: f64) {
        self.commit_body(i, new_m)
    }

    #[inline(always)]
    fn commit_body(&mut self, i: usize, new_m: f64) {
        let (ns, m_, nb, kr) = (self.signs.len(), self.pot.n_psi, self.nb, self.pot.n_radial);
        let kmm = kr * m_ * m_;
        let mut wmu = [[0.0f64; 64]; 2];
        let (a0, a1) = (self.aff_off[i], self.aff_off[i + 1]);
        let mut mk = std::mem::take(&mut self.work.mk);
        mk.resize(self.n_monos, 0.0);
        let mut bm = std::mem::take(&mut self.bm);
        let mut a = std::mem::take(&mut self.a);
        let mut wbg = [0.0f64; 64];
        for l in 0..a1 - a0 {
            let slot = a0 + l;
            let j = self.aff_atoms[slot];
            let xj = &mut bm[j * ns * nb..(j + 1) * ns * nb];
            // the same arithmetic, in the same order, as slot_moments: the
            // moved atom's own term first, from its old partial sums
            if j == i {
                for si in 0..ns {
                    let xs = &mut xj[si * nb..(si + 1) * nb];
                    for b in 1..m_ {
                        let c = self.dpsi[si][b];
                        let ab = &a[((j * ns + si) * (m_ - 1) + b - 1) * nb..((j * ns + si) * (m_ - 1) + b) * nb];
                        for (xq, &aq) in xs.iter_mut().zip(ab) {
                            *xq += c * aq;
                        }
                    }
                }
            }
            let mj = if j == i { new_m } else { self.moments[j] };
            for e in self.slot_off[slot]..self.slot_off[slot + 1] {
                self.entry_monos(self.unit[e], &mut mk);
                self.entry_weights(j, mj, e, &mut wmu);
                for si in 0..ns {
                    let xs = &mut xj[si * nb..(si + 1) * nb];
                    for &(mu, ms, len, bs) in &self.mu_blocks {
                        let c = wmu[si][mu];
                        for (xq, &mq) in xs[bs..bs + len].iter_mut().zip(&mk[ms..ms + len]) {
                            *xq += c * mq;
                        }
                    }
                }
                for si in 0..ns {
                    for b in 1..m_ {
                        let off = ((j * ns + si) * (m_ - 1) + b - 1) * nb;
                        let dst = &mut a[off..off + nb];
                        for mu in 0..kr {
                            let mut y = 0.0;
                            for g in 1..m_ {
                                y += self.rad[e * kmm + (mu * m_ + b) * m_ + g] * self.dpsi[si][g];
                            }
                            wbg[mu] = y;
                        }
                        for &(mu, ms, len, bs) in &self.mu_blocks {
                            let c = wbg[mu];
                            for (d, &mq) in dst[bs..bs + len].iter_mut().zip(&mk[ms..ms + len]) {
                                *d += c * mq;
                            }
                        }
                    }
                }
            }
            self.site[j] = self.new_site[l];
        }
        self.bm = bm;
        self.a = a;
        self.work.mk = mk;
        self.moments[i] = new_m;
    }

    /// Energy change (eV) of setting the moment of atom `i` to `new_m`
    /// (nothing changes).
    pub fn delta_energy(&mut self, i: usize, new_m: f64) -> Result<f64> {
        self.check_atom(i)?;
        if !new_m.is_finite() {
            return Err(MmtpError::Value(format!("new moment of atom {i} is not finite: {new_m}")));
        }
        Ok(self.propose(i, new_m))
    }

    /// Set the moment of atom `i` unconditionally.
    pub fn set_moment(&mut self, i: usize, new_m: f64) -> Result<()> {
        self.delta_energy(i, new_m)?;
        self.commit(i, new_m);
        Ok(())
    }

    fn check_atom(&self, i: usize) -> Result<()> {
        if i >= self.n_atoms() {
            return Err(MmtpError::Value(format!("atom index {i} is out of range (N = {})", self.n_atoms())));
        }
        Ok(())
    }

    /// One Metropolis attempt on atom `i` at inverse temperature `beta`
    /// (1/eV; 0 = infinite temperature): a sign flip with probability
    /// `p_flip`, else a magnitude move of at most `step` times its bound.
    pub fn attempt(&mut self, i: usize, beta: f64, p_flip: f64, step: f64) -> Result<MoveResult> {
        self.check_atom(i)?;
        check_move_params(beta, p_flip, step)?;
        Ok(self.attempt_unchecked(i, beta, p_flip, step))
    }

    fn attempt_unchecked(&mut self, i: usize, beta: f64, p_flip: f64, step: f64) -> MoveResult {
        let mmax = self.m_max[i];
        let m = self.moments[i];
        if mmax == 0.0 {
            return MoveResult { atom: i, flip: false, accepted: false, delta_e: 0.0, moment: m };
        }
        let flip = self.rng.gen::<f64>() < p_flip;
        let new_m = if flip {
            -m
        } else {
            let d = (2.0 * self.rng.gen::<f64>() - 1.0) * (step.min(1.0) * mmax);
            let mut x = m.abs() + d;
            if x < 0.0 {
                x = -x;
            }
            if x > mmax {
                x = 2.0 * mmax - x;
            }
            let x = x.clamp(0.0, mmax);
            if m < 0.0 {
                -x
            } else {
                x
            }
        };
        let de = self.propose(i, new_m);
        let u: f64 = self.rng.gen();
        let accepted = de <= 0.0 || u < (-beta * de).exp();
        if accepted {
            self.commit(i, new_m);
        }
        MoveResult { atom: i, flip, accepted, delta_e: de, moment: self.moments[i] }
    }

    /// `n_sweeps` sweeps: each visits the atoms of `sites` (all atoms if
    /// None) in order with one Metropolis attempt each.
    pub fn sweep(&mut self, beta: f64, p_flip: f64, step: f64, n_sweeps: usize, sites: Option<&[usize]>) -> Result<SweepStats> {
        check_move_params(beta, p_flip, step)?;
        let all: Vec<usize>;
        let sites = match sites {
            Some(s) => {
                for &i in s {
                    self.check_atom(i)?;
                }
                s
            }
            None => {
                all = (0..self.n_atoms()).collect();
                &all
            }
        };
        let mut st = SweepStats::default();
        for _ in 0..n_sweeps {
            for &i in sites {
                if self.m_max[i] == 0.0 {
                    continue;
                }
                let r = self.attempt_unchecked(i, beta, p_flip, step);
                if r.flip {
                    st.flips_tried += 1;
                    st.flips_accepted += r.accepted as usize;
                } else {
                    st.mags_tried += 1;
                    st.mags_accepted += r.accepted as usize;
                }
            }
        }
        Ok(st)
    }
}

fn check_move_params(beta: f64, p_flip: f64, step: f64) -> Result<()> {
    if !(beta.is_finite() && beta >= 0.0) {
        return Err(MmtpError::Value(format!("inverse temperature must be finite and >= 0, got {beta}")));
    }
    if !(0.0..=1.0).contains(&p_flip) {
        return Err(MmtpError::Value(format!("flip probability must be in [0, 1], got {p_flip}")));
    }
    if !(step.is_finite() && step >= 0.0) {
        return Err(MmtpError::Value(format!("magnitude step must be finite and >= 0, got {step}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::basis_gen;
    use crate::model::EvalOptions;

    fn setup(symmetrize: bool) -> (Potential, Config) {
        setup_with(1, 3, [-3.0, -0.5], [3.0, 0.5], symmetrize)
    }

    /// `rep`^3 copies of an 8-atom rock-salt-like cube (perturbed), `m`
    /// magnetic basis functions, magnetic intervals [lo_z, hi_z].
    fn setup_with(rep: usize, m: usize, lo: [f64; 2], hi: [f64; 2], symmetrize: bool) -> (Potential, Config) {
        let g = basis_gen::generate(10).expect("basis");
        let tables = crate::model::Tables {
            basic: g.basic.clone(),
            times: g.times.iter().map(|&(i, j, m, k)| (i, j, m as f64, k)).collect(),
            n_moments: g.n_moments,
            scalars: g.scalars.clone(),
        };
        let n_radial = tables.n_radial();
        let (c, p) = (2usize, 4usize);
        let np = c * c * n_radial * p * m * m + c + tables.scalars.len();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let params: Vec<f64> = (0..np).map(|_| 0.2 * (rng.gen::<f64>() - 0.5)).collect();
        let pot = Potential::new(c, 1.0, 1.5, 4.5, p, m, lo.to_vec(), hi.to_vec(), tables, params).expect("pot");
        // rocksalt conventional-ish: 8 atoms in a cube of 4.1 Å, perturbed, repeated
        let a = 4.1;
        let mut pos = Vec::new();
        let mut types = Vec::new();
        let n2 = 2 * rep;
        for x in 0..n2 {
            for y in 0..n2 {
                for z in 0..n2 {
                    let h = ((x * 7 + y * 3 + z * 5) % 11) as f64 / 11.0 - 0.5;
                    pos.push([x as f64 * a / 2.0 + 0.05 * (z % 2) as f64 + 0.04 * h, y as f64 * a / 2.0 - 0.03 * h, z as f64 * a / 2.0 + 0.03 * (x % 2) as f64]);
                    types.push((x + y + z) % 2);
                }
            }
        }
        let n = pos.len();
        let moments: Vec<f64> = (0..n)
            .map(|i| {
                let u = ((i * 37) % 17) as f64 / 17.0;
                if types[i] == 1 {
                    0.7 * (u - 0.5) * hi[1].min(-lo[1])
                } else {
                    (if i % 3 == 0 { -1.0 } else { 1.0 }) * (0.5 + 2.0 * u)
                }
            })
            .collect();
        let _ = symmetrize;
        let l = a * rep as f64;
        (pot, Config { lattice: [[l, 0.0, 0.0], [0.0, l, 0.0], [0.0, 0.0, l]], pbc: [true; 3], positions: pos, types, moments })
    }

    #[test]
    fn local_change_equals_full_recompute() {
        for symmetrize in [true, false] {
            let (pot, mut cfg) = setup(symmetrize);
            let mmax: Vec<f64> = cfg.types.iter().map(|&t| if t == 0 { 3.0 } else { 0.5 }).collect();
            let mut s = SpinSampler::new(&pot, &cfg, &mmax, symmetrize, 7).expect("sampler");
            let opts = EvalOptions { symmetrize, param_grad: false, forces: false };
            let mut e0 = pot.evaluate(&cfg, opts).expect("eval").energy;
            assert!((s.energy() - e0).abs() < 1e-10);
            for step in 0..40 {
                let i = step % 8;
                let new_m = if step % 3 == 0 { -cfg.moments[i] } else { mmax[i] * ((step as f64 * 0.37).sin()) };
                let de = s.delta_energy(i, new_m).expect("de");
                let mut c2 = cfg.clone();
                c2.moments[i] = new_m;
                let e1 = pot.evaluate(&c2, opts).expect("eval").energy;
                assert!((de - (e1 - e0)).abs() < 1e-10, "sym {symmetrize} step {step}: {de} vs {}", e1 - e0);
                if step % 2 == 0 {
                    s.set_moment(i, new_m).expect("set");
                    cfg = c2;
                    let e = pot.evaluate(&cfg, opts).expect("eval").energy;
                    assert!((s.energy() - e).abs() < 1e-10);
                    e0 = e;
                }
            }
        }
    }

    /// Larger cells (entries j -> i single or several images), two and three
    /// magnetic basis functions, symmetric and asymmetric intervals: every
    /// proposal against a full recompute, and after many accepted moves the
    /// sampler's energy against a full evaluation.
    #[test]
    fn local_change_equals_full_recompute_larger_cells() {
        let cases: [(usize, usize, [f64; 2], [f64; 2]); 3] =
            [(2, 2, [-3.0, -0.5], [3.0, 0.5]), (2, 3, [-3.2, -0.4], [2.8, 0.6]), (1, 2, [-2.9, -0.5], [3.1, 0.4])];
        for (rep, m, lo, hi) in cases {
            for symmetrize in [true, false] {
                let (pot, mut cfg) = setup_with(rep, m, lo, hi, symmetrize);
                let n = cfg.positions.len();
                let mmax: Vec<f64> = cfg.types.iter().map(|&t| if t == 0 { 2.8 } else { 0.4 }).collect();
                let mut s = SpinSampler::new(&pot, &cfg, &mmax, symmetrize, 5).expect("sampler");
                let opts = EvalOptions { symmetrize, param_grad: false, forces: false };
                let mut e0 = pot.evaluate(&cfg, opts).expect("eval").energy;
                assert!((s.energy() - e0).abs() < 1e-10);
                for step in 0..30 {
                    let i = (step * 13 + 5) % n;
                    let new_m = if step % 3 == 0 { -cfg.moments[i] } else { mmax[i] * (step as f64 * 0.61).cos() };
                    let de = s.delta_energy(i, new_m).expect("de");
                    let mut c2 = cfg.clone();
                    c2.moments[i] = new_m;
                    let e1 = pot.evaluate(&c2, opts).expect("eval").energy;
                    assert!((de - (e1 - e0)).abs() < 1e-10, "rep {rep} m {m} sym {symmetrize} step {step}: {de} vs {}", e1 - e0);
                    if step % 2 == 0 {
                        s.set_moment(i, new_m).expect("set");
                        cfg = c2;
                        e0 = e1;
                    }
                }
                // many Metropolis moves, then the cached state against a full evaluation
                s.sweep(3.0, 0.5, 0.3, 5, None).expect("sweep");
                let mut c3 = cfg.clone();
                c3.moments = s.moments().to_vec();
                let full = pot.evaluate(&c3, opts).expect("eval");
                assert!((s.energy() - full.energy).abs() < 1e-9, "rep {rep} m {m}: {} vs {}", s.energy(), full.energy);
                for (a, b) in s.site_energies().iter().zip(&full.site_energies) {
                    assert!((a - b).abs() < 1e-10);
                }
            }
        }
    }

    #[test]
    fn sweeps_are_reproducible_and_consistent() {
        let (pot, cfg) = setup(true);
        let mmax: Vec<f64> = cfg.types.iter().map(|&t| if t == 0 { 3.0 } else { 0.5 }).collect();
        let run = || {
            let mut s = SpinSampler::new(&pot, &cfg, &mmax, true, 11).expect("sampler");
            let st = s.sweep(5.0, 0.5, 0.3, 20, None).expect("sweep");
            (st, s.moments().to_vec(), s.energy())
        };
        let (st1, m1, e1) = run();
        let (st2, m2, e2) = run();
        assert_eq!(st1, st2);
        assert_eq!(m1, m2);
        assert_eq!(e1, e2);
        assert!(m1.iter().zip(&mmax).all(|(m, b)| m.abs() <= *b));
        let mut c2 = cfg.clone();
        c2.moments = m1;
        let e = pot.evaluate(&c2, EvalOptions { symmetrize: true, param_grad: false, forces: false }).expect("eval").energy;
        assert!((e - e1).abs() < 1e-9);
        assert!(st1.flips_accepted + st1.mags_accepted > 0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let (pot, cfg) = setup(true);
        assert!(SpinSampler::new(&pot, &cfg, &[1.0; 3], true, 0).is_err());
        let mmax = vec![3.0; 8];
        let mut s = SpinSampler::new(&pot, &cfg, &mmax, true, 0).expect("sampler");
        assert!(s.sweep(-1.0, 0.5, 0.1, 1, None).is_err());
        assert!(s.sweep(1.0, 1.5, 0.1, 1, None).is_err());
        assert!(s.attempt(99, 1.0, 0.5, 0.1).is_err());
        assert!(s.delta_energy(0, f64::NAN).is_err());
    }
}
