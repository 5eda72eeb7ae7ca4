//! Neighbour search with cell lists: triclinic cells, any combination of
//! periodic axes, cells much smaller than the cutoff (many images, including
//! images of an atom itself) and non-periodic clusters. Cost is linear in the
//! number of atoms; atoms are processed in parallel with rayon.

use crate::error::{MmtpError, Result};
use rayon::prelude::*;

/// Distance below which two atoms are taken to sit on the same spot (Å).
pub const COINCIDENCE_TOL: f64 = 1e-6;

/// Largest |coordinate| of a position or lattice vector (Å); beyond it the
/// wrapping into the cell loses all precision.
pub const MAX_COORDINATE: f64 = 1e7;
/// Largest number of ordered neighbour pairs of one configuration (about
/// 32 bytes each: 10^8 pairs = 3.2 GB). Checked on an estimate before the
/// search allocates anything.
pub const MAX_PAIRS: f64 = 1e8;
/// Largest mean number of neighbours per atom (a density of ~20 atoms/Å^3
/// at a 5 Å cutoff; real solids have under 0.2 atoms/Å^3). Cells much smaller
/// than the cutoff beyond this are rejected rather than enumerated.
pub const MAX_NEIGHBORS_PER_ATOM: f64 = 1e4;

/// Neighbour list in compressed-row form: the neighbours of atom `i` are the
/// entries `offsets[i]..offsets[i + 1]` of `index` and `vec`.
#[derive(Clone, Debug, Default)]
pub struct NeighborList {
    /// Row offsets, length N + 1.
    pub offsets: Vec<usize>,
    /// Neighbour atom index j of each entry.
    pub index: Vec<usize>,
    /// r_ij = r_j (+ lattice image shift) - r_i, Å.
    pub vec: Vec<[f64; 3]>,
}

impl NeighborList {
    /// Number of atoms.
    pub fn n_atoms(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    /// Total number of (ordered) neighbour pairs.
    pub fn n_pairs(&self) -> usize {
        self.index.len()
    }
    /// Range of the entries of atom `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: &[f64; 3], b: &[f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn norm(a: &[f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Inverse of a 3x3 matrix (rows = vectors), or None if singular.
pub fn inverse3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c0 = cross(&m[1], &m[2]);
    let det = dot(&m[0], &c0);
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let c1 = cross(&m[2], &m[0]);
    let c2 = cross(&m[0], &m[1]);
    // inverse columns are the cross products / det
    let mut inv = [[0.0; 3]; 3];
    for r in 0..3 {
        inv[r][0] = c0[r] / det;
        inv[r][1] = c1[r] / det;
        inv[r][2] = c2[r] / det;
    }
    Some(inv)
}

/// Volume of the cell spanned by the rows of `m`.
pub fn volume(m: &[[f64; 3]; 3]) -> f64 {
    dot(&m[0], &cross(&m[1], &m[2])).abs()
}

/// The lattice actually used for binning: periodic vectors as given, the
/// others replaced by an orthonormal complement (their length is irrelevant
/// because no images are taken along them).
fn effective_lattice(lattice: &[[f64; 3]; 3], pbc: [bool; 3]) -> Result<[[f64; 3]; 3]> {
    let periodic: Vec<usize> = (0..3).filter(|&a| pbc[a]).collect();
    for &a in &periodic {
        let n = norm(&lattice[a]);
        if !(n > 0.0) || !n.is_finite() {
            return Err(MmtpError::Geometry(format!(
                "lattice vector {a} is periodic but has length {n}"
            )));
        }
    }
    let mut eff = *lattice;
    match periodic.len() {
        3 => {}
        2 => {
            let (a, b) = (periodic[0], periodic[1]);
            let c = (0..3).find(|x| !pbc[*x]).unwrap_or(2);
            let n = cross(&lattice[a], &lattice[b]);
            let nn = norm(&n);
            if !(nn > 0.0) {
                return Err(MmtpError::Geometry(
                    "the two periodic lattice vectors are parallel".into(),
                ));
            }
            eff[c] = [n[0] / nn, n[1] / nn, n[2] / nn];
        }
        1 => {
            let a = periodic[0];
            let u = lattice[a];
            let un = norm(&u);
            let e = [u[0] / un, u[1] / un, u[2] / un];
            // pick the coordinate axis least aligned with e
            let mut k = 0;
            for t in 1..3 {
                if e[t].abs() < e[k].abs() {
                    k = t;
                }
            }
            let mut ax = [0.0; 3];
            ax[k] = 1.0;
            let v = cross(&e, &ax);
            let vn = norm(&v);
            let v = [v[0] / vn, v[1] / vn, v[2] / vn];
            let w = cross(&e, &v);
            let others: Vec<usize> = (0..3).filter(|&x| x != a).collect();
            eff[others[0]] = v;
            eff[others[1]] = w;
        }
        _ => {
            eff = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        }
    }
    let vol = volume(&eff);
    let scale = norm(&eff[0]) * norm(&eff[1]) * norm(&eff[2]);
    if !(vol > 1e-10 * scale) || !vol.is_finite() {
        return Err(MmtpError::Geometry(format!(
            "the cell has zero volume (volume {vol:e} Å^3 for periodic axes {pbc:?})"
        )));
    }
    Ok(eff)
}

/// Atoms per chunk of the parallel neighbour search.
const NL_CHUNK: usize = 256;

/// Build the full (both directions) neighbour list of all atoms within
/// `cutoff` (exclusive of an atom itself, inclusive of its periodic images).
pub fn build(
    lattice: &[[f64; 3]; 3],
    pbc: [bool; 3],
    positions: &[[f64; 3]],
    cutoff: f64,
) -> Result<NeighborList> {
    let n = positions.len();
    if !(cutoff > 0.0) || !cutoff.is_finite() {
        return Err(MmtpError::Value(format!("cutoff must be positive and finite, got {cutoff}")));
    }
    for (a, row) in lattice.iter().enumerate() {
        if row.iter().any(|x| !x.is_finite()) {
            return Err(MmtpError::Value(format!("lattice vector {a} is not finite: {row:?}")));
        }
        if row.iter().any(|x| x.abs() > MAX_COORDINATE) {
            return Err(MmtpError::Value(format!(
                "lattice vector {a} has a component beyond {MAX_COORDINATE:e} Å: {row:?}"
            )));
        }
    }
    for (i, p) in positions.iter().enumerate() {
        if p.iter().any(|x| !x.is_finite()) {
            return Err(MmtpError::Value(format!("position of atom {i} is not finite: {p:?}")));
        }
        if p.iter().any(|x| x.abs() > MAX_COORDINATE) {
            return Err(MmtpError::Value(format!(
                "position of atom {i} has a coordinate beyond {MAX_COORDINATE:e} Å: {p:?}"
            )));
        }
    }
    if n == 0 {
        return Ok(NeighborList { offsets: vec![0], index: vec![], vec: vec![] });
    }
    let eff = effective_lattice(lattice, pbc)?;
    let inv = inverse3(&eff).ok_or_else(|| MmtpError::Geometry("singular cell".into()))?;
    // plane spacing along each fractional axis: 1 / |column a of inv|
    let mut spacing = [0.0; 3];
    for a in 0..3 {
        let col = [inv[0][a], inv[1][a], inv[2][a]];
        spacing[a] = 1.0 / norm(&col);
    }
    // fractional coordinates; wrap periodic axes into [0, 1)
    let mut frac = vec![[0.0f64; 3]; n];
    let mut wrapped = vec![[0.0f64; 3]; n];
    for i in 0..n {
        let p = positions[i];
        let mut f = [0.0; 3];
        for a in 0..3 {
            f[a] = p[0] * inv[0][a] + p[1] * inv[1][a] + p[2] * inv[2][a];
        }
        let mut shift = [0.0; 3];
        for a in 0..3 {
            if pbc[a] {
                let fl = f[a].floor();
                shift[a] = fl;
                f[a] -= fl;
                if f[a] >= 1.0 {
                    f[a] = 0.0;
                    shift[a] += 1.0;
                }
            }
        }
        let mut w = p;
        for a in 0..3 {
            for k in 0..3 {
                w[k] -= shift[a] * eff[a][k];
            }
        }
        frac[i] = f;
        wrapped[i] = w;
    }
    // bins
    let mut lo = [0.0f64; 3];
    let mut ext = [1.0f64; 3]; // extent in fractional units
    for a in 0..3 {
        if !pbc[a] {
            let mn = frac.iter().map(|f| f[a]).fold(f64::INFINITY, f64::min);
            let mx = frac.iter().map(|f| f[a]).fold(f64::NEG_INFINITY, f64::max);
            lo[a] = mn;
            ext[a] = mx - mn;
        }
    }
    let mut nb = [1usize; 3];
    for a in 0..3 {
        let perp = ext[a] * spacing[a];
        let k = (perp / cutoff).floor();
        nb[a] = if k >= 1.0 { k.min(1e6) as usize } else { 1 };
    }
    let limit = 4 * n + 64;
    while nb[0] * nb[1] * nb[2] > limit {
        let a = (0..3).max_by_key(|&a| nb[a]).unwrap_or(0);
        nb[a] = nb[a].div_ceil(2);
    }
    let mut reach = [0i64; 3];
    for a in 0..3 {
        let width = ext[a] * spacing[a] / nb[a] as f64;
        // capped so that absurd cells reach check_search_size without overflow
        reach[a] = if pbc[a] || nb[a] > 1 { (cutoff / width).floor().min(1e12) as i64 + 1 } else { 0 };
    }
    check_search_size(n, &eff, &ext, &nb, &reach, pbc, cutoff)?;
    let bin_of = |f: &[f64; 3]| -> [usize; 3] {
        let mut b = [0usize; 3];
        for a in 0..3 {
            let t = if ext[a] > 0.0 { (f[a] - lo[a]) / ext[a] } else { 0.0 };
            let k = (t * nb[a] as f64).floor();
            b[a] = if k < 0.0 { 0 } else { (k as usize).min(nb[a] - 1) };
        }
        b
    };
    let flat = |b: [usize; 3]| (b[0] * nb[1] + b[1]) * nb[2] + b[2];
    let nbins = nb[0] * nb[1] * nb[2];
    let atom_bin: Vec<[usize; 3]> = frac.iter().map(bin_of).collect();
    let mut start = vec![0usize; nbins + 1];
    for b in &atom_bin {
        start[flat(*b) + 1] += 1;
    }
    for k in 0..nbins {
        start[k + 1] += start[k];
    }
    let mut fill = start.clone();
    let mut members = vec![0usize; n];
    for (i, b) in atom_bin.iter().enumerate() {
        let f = flat(*b);
        members[fill[f]] = i;
        fill[f] += 1;
    }
    // positions in bin order, so a bin's candidates are contiguous in memory
    let binned: Vec<[f64; 3]> = members.iter().map(|&j| wrapped[j]).collect();
    // expected neighbours per atom (number density x sphere volume), for the
    // initial capacity of each list
    let density = n as f64 / volume(&eff).abs().max(1e-300);
    let expect = (density * 4.19 * cutoff.powi(3) * 1.25).clamp(8.0, 4096.0) as usize;
    let rc2 = cutoff * cutoff;
    let tol2 = COINCIDENCE_TOL * COINCIDENCE_TOL;
    // atoms in fixed chunks (independent of the thread count), each chunk's lists
    // built in parallel, then copied in parallel into the flat arrays: the
    // result is the same as a serial build, neighbour order included
    let search = |i: usize, idx: &mut Vec<usize>, vv: &mut Vec<[f64; 3]>| -> Result<()> {
        let b = atom_bin[i];
        let ri = wrapped[i];
        for dx in -reach[0]..=reach[0] {
            let Some((cx, sx)) = wrap_bin(b[0] as i64 + dx, nb[0], pbc[0]) else { continue };
            for dy in -reach[1]..=reach[1] {
                let Some((cy, sy)) = wrap_bin(b[1] as i64 + dy, nb[1], pbc[1]) else { continue };
                for dz in -reach[2]..=reach[2] {
                    let Some((cz, sz)) = wrap_bin(b[2] as i64 + dz, nb[2], pbc[2]) else { continue };
                    let (sxf, syf, szf) = (sx as f64, sy as f64, sz as f64);
                    let shift = [
                        sxf * eff[0][0] + syf * eff[1][0] + szf * eff[2][0],
                        sxf * eff[0][1] + syf * eff[1][1] + szf * eff[2][1],
                        sxf * eff[0][2] + syf * eff[1][2] + szf * eff[2][2],
                    ];
                    let zero_shift = sx == 0 && sy == 0 && sz == 0;
                    let f = flat([cx, cy, cz]);
                    let (s0, s1) = (start[f], start[f + 1]);
                    for (&j, rj) in members[s0..s1].iter().zip(&binned[s0..s1]) {
                        if zero_shift && j == i {
                            continue;
                        }
                        let v = [
                            rj[0] + shift[0] - ri[0],
                            rj[1] + shift[1] - ri[1],
                            rj[2] + shift[2] - ri[2],
                        ];
                        let d2 = dot(&v, &v);
                        if d2 < rc2 {
                            if d2 < tol2 {
                                return Err(MmtpError::Geometry(format!(
                                    "atoms {i} and {j} sit on the same spot (distance {:.3e} Å)",
                                    d2.sqrt()
                                )));
                            }
                            idx.push(j);
                            vv.push(v);
                        }
                    }
                }
            }
        }
        Ok(())
    };
    let nchunks = n.div_ceil(NL_CHUNK);
    type Chunk = (Vec<usize>, Vec<usize>, Vec<[f64; 3]>);
    let chunks: Vec<Result<Chunk>> = (0..nchunks)
        .into_par_iter()
        .map(|c| {
            let atoms = c * NL_CHUNK..((c + 1) * NL_CHUNK).min(n);
            let mut counts = Vec::with_capacity(atoms.len());
            let mut idx = Vec::with_capacity(expect * atoms.len());
            let mut vv = Vec::with_capacity(expect * atoms.len());
            for i in atoms {
                let before = idx.len();
                search(i, &mut idx, &mut vv)?;
                counts.push(idx.len() - before);
            }
            Ok((counts, idx, vv))
        })
        .collect();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    let mut total = 0;
    let mut parts = Vec::with_capacity(nchunks);
    for r in chunks {
        let (counts, idx, vv) = r?;
        for c in counts {
            total += c;
            offsets.push(total);
        }
        parts.push((idx, vv));
    }
    // the flat arrays are written once, in parallel
    let index = crate::threads::concat(&parts.iter().map(|p| &p.0[..]).collect::<Vec<_>>());
    let vecs = crate::threads::concat(&parts.iter().map(|p| &p.1[..]).collect::<Vec<_>>());
    Ok(NeighborList { offsets, index, vec: vecs })
}

/// Refuse a search whose size is absurd, before allocating: the number of
/// candidate pairs examined (atoms x visited bins x mean bin occupancy) and
/// its fraction inside the cutoff sphere estimate the pairs.
fn check_search_size(
    n: usize,
    eff: &[[f64; 3]; 3],
    ext: &[f64; 3],
    nb: &[usize; 3],
    reach: &[i64; 3],
    pbc: [bool; 3],
    cutoff: f64,
) -> Result<()> {
    let nf = n as f64;
    let mut candidates = nf * nf;
    let mut window = volume(eff);
    for a in 0..3 {
        let visited = 2.0 * reach[a] as f64 + 1.0;
        let visited = if pbc[a] { visited } else { visited.min(nb[a] as f64) };
        candidates *= visited / nb[a] as f64;
        window *= visited * ext[a] / nb[a] as f64;
    }
    let ball = 4.0 / 3.0 * std::f64::consts::PI * cutoff.powi(3);
    let inside = if window > ball { ball / window } else { 1.0 };
    let pairs = candidates * inside;
    if !(pairs <= MAX_PAIRS && pairs <= MAX_NEIGHBORS_PER_ATOM * nf && candidates <= 10.0 * MAX_PAIRS) {
        return Err(MmtpError::Geometry(format!(
            "the neighbour search would give about {pairs:.3e} pairs ({:.3e} per atom) for {n} atoms at a cutoff of \
             {cutoff} Å: limits are {MAX_PAIRS:e} pairs and {MAX_NEIGHBORS_PER_ATOM:e} per atom (is the cell far \
             smaller than the cutoff, or the structure collapsed?)",
            pairs / nf
        )));
    }
    Ok(())
}

#[inline]
fn wrap_bin(t: i64, nb: usize, periodic: bool) -> Option<(usize, i64)> {
    let nbi = nb as i64;
    if periodic {
        Some((t.rem_euclid(nbi) as usize, t.div_euclid(nbi)))
    } else if t < 0 || t >= nbi {
        None
    } else {
        Some((t as usize, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn brute(lat: &[[f64; 3]; 3], pbc: [bool; 3], pos: &[[f64; 3]], rc: f64) -> Vec<Vec<(usize, [i64; 3])>> {
        // enumerate images generously
        let inv = inverse3(lat).unwrap();
        let mut nmax = [0i64; 3];
        for a in 0..3 {
            if pbc[a] {
                let col = [inv[0][a], inv[1][a], inv[2][a]];
                let sp = 1.0 / norm(&col);
                // positions are not wrapped: add their spread in fractional units
                let fr: Vec<f64> = pos.iter().map(|p| p[0] * inv[0][a] + p[1] * inv[1][a] + p[2] * inv[2][a]).collect();
                let spread = fr.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - fr.iter().cloned().fold(f64::INFINITY, f64::min);
                nmax[a] = (rc / sp).ceil() as i64 + spread.ceil() as i64 + 2;
            }
        }
        let mut out = vec![vec![]; pos.len()];
        for i in 0..pos.len() {
            for j in 0..pos.len() {
                for sx in -nmax[0]..=nmax[0] {
                    for sy in -nmax[1]..=nmax[1] {
                        for sz in -nmax[2]..=nmax[2] {
                            if i == j && sx == 0 && sy == 0 && sz == 0 {
                                continue;
                            }
                            let s = [sx as f64, sy as f64, sz as f64];
                            let mut v = [0.0; 3];
                            for k in 0..3 {
                                v[k] = pos[j][k] - pos[i][k] + s[0] * lat[0][k] + s[1] * lat[1][k] + s[2] * lat[2][k];
                            }
                            if dot(&v, &v) < rc * rc {
                                out[i].push((j, [sx, sy, sz]));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn sorted_dists(nl: &NeighborList, i: usize) -> Vec<(usize, i64, i64, i64)> {
        let mut v: Vec<_> = nl
            .range(i)
            .map(|k| {
                let r = nl.vec[k];
                (nl.index[k], (r[0] * 1e6).round() as i64, (r[1] * 1e6).round() as i64, (r[2] * 1e6).round() as i64)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn matches_brute_force_on_skewed_small_cells() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for case in 0..60 {
            let mut lat = [[0.0; 3]; 3];
            for a in 0..3 {
                for k in 0..3 {
                    lat[a][k] = rng.gen_range(-1.0..1.0) + if a == k { rng.gen_range(1.5..7.0) } else { 0.0 };
                }
            }
            let pbc = [case % 5 != 1, case % 3 != 2, case % 7 != 3];
            let n = rng.gen_range(1..9);
            let pos: Vec<[f64; 3]> = (0..n)
                .map(|_| [rng.gen_range(-3.0..9.0), rng.gen_range(-3.0..9.0), rng.gen_range(-3.0..9.0)])
                .collect();
            let rc = rng.gen_range(2.0..6.0);
            let nl = match build(&lat, pbc, &pos, rc) {
                Ok(nl) => nl,
                Err(MmtpError::Geometry(_)) => continue, // random coincidence
                Err(e) => panic!("{e}"),
            };
            let br = brute(&lat, pbc, &pos, rc);
            for i in 0..n {
                let mut exp: Vec<_> = br[i]
                    .iter()
                    .map(|(j, s)| {
                        let mut v = [0.0; 3];
                        for k in 0..3 {
                            v[k] = pos[*j][k] - pos[i][k]
                                + s[0] as f64 * lat[0][k]
                                + s[1] as f64 * lat[1][k]
                                + s[2] as f64 * lat[2][k];
                        }
                        (*j, (v[0] * 1e6).round() as i64, (v[1] * 1e6).round() as i64, (v[2] * 1e6).round() as i64)
                    })
                    .collect();
                exp.sort();
                let got = sorted_dists(&nl, i);
                let extra: Vec<_> = got.iter().filter(|x| !exp.contains(x)).collect();
                let missing: Vec<_> = exp.iter().filter(|x| !got.contains(x)).collect();
                assert!(extra.is_empty() && missing.is_empty(), "case {case} atom {i} pbc {pbc:?}: extra {extra:?} missing {missing:?} ({} vs {})", got.len(), exp.len());
            }
        }
    }

    #[test]
    fn large_cell_and_cluster() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let lat = [[12.0, 0.3, 0.0], [0.0, 11.0, 0.5], [0.2, 0.0, 13.0]];
        let pos: Vec<[f64; 3]> = (0..300)
            .map(|_| [rng.gen_range(0.0..12.0), rng.gen_range(0.0..11.0), rng.gen_range(0.0..13.0)])
            .collect();
        for pbc in [[true; 3], [false; 3], [true, false, true]] {
            let nl = build(&lat, pbc, &pos, 3.1).unwrap();
            let br = brute(&lat, pbc, &pos, 3.1);
            for i in 0..pos.len() {
                assert_eq!(nl.range(i).len(), br[i].len());
            }
        }
        // cluster with a zero cell
        let z = [[0.0; 3]; 3];
        let nl = build(&z, [false; 3], &pos, 3.1).unwrap();
        let br = brute(&lat, [false; 3], &pos, 3.1);
        for i in 0..pos.len() {
            assert_eq!(nl.range(i).len(), br[i].len());
        }
    }

    #[test]
    fn errors() {
        let lat = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]];
        assert!(matches!(build(&lat, [true; 3], &[[0.0; 3], [0.0; 3]], 2.0), Err(MmtpError::Geometry(_))));
        assert!(matches!(build(&lat, [true; 3], &[[f64::NAN, 0.0, 0.0]], 2.0), Err(MmtpError::Value(_))));
        let flat = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]];
        assert!(matches!(build(&flat, [true; 3], &[[0.0; 3]], 2.0), Err(MmtpError::Geometry(_))));
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn absurd_cells_are_refused_before_allocating() {
        for edge in [0.01, 0.03, 1e-100] {
            let lat = [[edge, 0.0, 0.0], [0.0, edge, 0.0], [0.0, 0.0, edge]];
            let r = build(&lat, [true; 3], &[[0.0; 3]], 5.0);
            assert!(matches!(r, Err(MmtpError::Geometry(ref m)) if m.contains("pairs")), "{edge}: {r:?}");
        }
        let lat = [[1e-100, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]];
        assert!(build(&lat, [true, false, false], &[[0.0; 3]], 5.0).is_err());
        let far = [[1e100, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let lat = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]];
        assert!(matches!(build(&lat, [true; 3], &far, 2.0), Err(MmtpError::Value(_))));
        // an ordinary cell passes, with an estimate close to the truth
        let pos: Vec<[f64; 3]> = (0..64).map(|k| [(k % 4) as f64 * 2.0, ((k / 4) % 4) as f64 * 2.0, (k / 16) as f64 * 2.0]).collect();
        let lat = [[8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 8.0]];
        assert!(build(&lat, [true; 3], &pos, 5.0).is_ok());
    }
}
