//! mmtp-lammps: the C ABI of mmtp-core used by the LAMMPS plugin in `lammps/`.
//!
//! A LAMMPS rank owns `nlocal` atoms and sees `nall - nlocal` ghost atoms;
//! its full neighbour list gives, for every local atom, all atoms (local or
//! ghost) within the cutoff plus the skin. [`mmtp_compute`] evaluates the
//! site energies of the local atoms through
//! [`mmtp_core::Potential::evaluate_local`] and returns forces and dE/dm on
//! all atoms (the plugin reverse-communicates the ghost parts to their
//! owners), the virial and, for the extrapolation grade, the parameter
//! gradients of the local site energies.
//!
//! Files read here are written by Python (`mmtp_rs.lammps`): a potential in a
//! plain token format (exact to the last bit: floats as Python `repr`), and
//! the inverse of an active set's matrix A. Every function returns a status
//! (0 = success) or a null pointer and writes a message into `err`; no panic
//! crosses the C boundary.

use mmtp_core::model::Tables;
use mmtp_core::neighbors::NeighborList;
use mmtp_core::maxvol::Grader;
use mmtp_core::{threads, EvalOptions, Potential};
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Large blocks (the per-chunk accumulators of a rank's atoms and ghosts, the
/// parameter-gradient rows) are kept for the next step instead of going back
/// to the kernel after every step; see `mmtp_core::alloc`.
#[global_allocator]
static ALLOC: mmtp_core::alloc::LargeBlockCache = mmtp_core::alloc::LargeBlockCache;

/// First line of a potential written by `mmtp_rs.lammps.write_potential`.
pub const POTENTIAL_TAG: &str = "mmtp_rs-lammps-potential";
/// First line of an active set written by `mmtp_rs.lammps.write_active_set`.
pub const ACTIVE_SET_TAG: &str = "mmtp_rs-lammps-active-set";
/// Format version of both files.
pub const FORMAT_VERSION: u32 = 1;

/// A potential with its species names and default symmetrisation.
#[derive(Debug)]
pub struct Model {
    pot: Potential,
    species: Vec<String>,
    symmetrize: bool,
}

/// The inverse of an active set's matrix, with the settings of its rows.
#[derive(Debug)]
pub struct ActiveSet {
    grader: Grader,
    neighborhood: bool,
    scale_by_atoms: bool,
    symmetrize: bool,
}

/// Whitespace tokens of a file with `#` comments, read one by one with the
/// keyword they belong to in the error messages.
struct Tokens<'a> {
    path: &'a str,
    it: std::vec::IntoIter<String>,
}

impl<'a> Tokens<'a> {
    fn open(path: &'a str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let toks: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        Ok(Tokens { path, it: toks.into_iter() })
    }
    fn word(&mut self, what: &str) -> Result<String, String> {
        self.it.next().ok_or_else(|| format!("{}: file ends before {what}", self.path))
    }
    fn key(&mut self, key: &str) -> Result<(), String> {
        let w = self.word(key)?;
        if w != key {
            return Err(format!("{}: expected '{key}', found '{w}'", self.path));
        }
        Ok(())
    }
    fn num<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, String> {
        let w = self.word(what)?;
        w.parse::<T>().map_err(|_| format!("{}: bad value '{w}' for {what}", self.path))
    }
    fn nums<T: std::str::FromStr>(&mut self, n: usize, what: &str) -> Result<Vec<T>, String> {
        (0..n).map(|_| self.num(what)).collect()
    }
    fn header(&mut self, tag: &str) -> Result<(), String> {
        self.key(tag).map_err(|_| format!("{}: not a {tag} file (write it with mmtp_rs.lammps)", self.path))?;
        let v: u32 = self.num("the format version")?;
        if v > FORMAT_VERSION {
            return Err(format!("{}: format version {v} is newer than this plugin's ({FORMAT_VERSION})", self.path));
        }
        Ok(())
    }
}

impl Model {
    /// Read a potential file written by `mmtp_rs.lammps.write_potential`.
    pub fn load(path: &str) -> Result<Model, String> {
        let mut t = Tokens::open(path)?;
        t.header(POTENTIAL_TAG)?;
        t.key("species")?;
        let c: usize = t.num("the number of species")?;
        let species = (0..c).map(|_| t.word("species names")).collect::<Result<Vec<_>, _>>()?;
        t.key("symmetrize")?;
        let symmetrize = t.num::<u8>("symmetrize")? != 0;
        t.key("scaling")?;
        let scaling = t.num("scaling")?;
        t.key("min_dist")?;
        let min_dist = t.num("min_dist")?;
        t.key("max_dist")?;
        let max_dist = t.num("max_dist")?;
        t.key("radial_basis_size")?;
        let n_phi = t.num("radial_basis_size")?;
        t.key("magnetic_basis_size")?;
        let n_psi = t.num("magnetic_basis_size")?;
        t.key("mag_lo")?;
        let mag_lo = t.nums(c, "mag_lo")?;
        t.key("mag_hi")?;
        let mag_hi = t.nums(c, "mag_hi")?;
        t.key("basic")?;
        let nb: usize = t.num("the number of basic moments")?;
        let mut basic = Vec::with_capacity(nb);
        for _ in 0..nb {
            let v: Vec<usize> = t.nums(4, "basic")?;
            basic.push([v[0], v[1], v[2], v[3]]);
        }
        t.key("times")?;
        let nt: usize = t.num("the number of products")?;
        let mut times = Vec::with_capacity(nt);
        for _ in 0..nt {
            let i = t.num("times")?;
            let j = t.num("times")?;
            let mult = t.num("times")?;
            let k = t.num("times")?;
            times.push((i, j, mult, k));
        }
        t.key("n_moments")?;
        let n_moments = t.num("n_moments")?;
        t.key("scalars")?;
        let ns: usize = t.num("the number of scalars")?;
        let scalars = t.nums(ns, "scalars")?;
        t.key("params")?;
        let np: usize = t.num("the number of parameters")?;
        let params = t.nums(np, "params")?;
        let tables = Tables { basic, times, n_moments, scalars };
        let pot = Potential::new(c, scaling, min_dist, max_dist, n_phi, n_psi, mag_lo, mag_hi, tables, params)
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(Model { pot, species, symmetrize })
    }
}

impl ActiveSet {
    /// Read an active set written by `mmtp_rs.lammps.write_active_set`.
    pub fn load(path: &str) -> Result<ActiveSet, String> {
        let mut t = Tokens::open(path)?;
        t.header(ACTIVE_SET_TAG)?;
        t.key("mode")?;
        let mode = t.word("mode")?;
        let neighborhood = match mode.as_str() {
            "configuration" => false,
            "neighborhood" => true,
            _ => return Err(format!("{path}: unknown mode '{mode}'")),
        };
        t.key("scale_by_atoms")?;
        let scale_by_atoms = t.num::<u8>("scale_by_atoms")? != 0;
        t.key("symmetrize")?;
        let symmetrize = t.num::<u8>("symmetrize")? != 0;
        t.key("m")?;
        let m: usize = t.num("m")?;
        t.key("inverse")?;
        let ainv: Vec<f64> = t.nums(m * m, "the inverse")?;
        let grader = Grader::new(m, ainv).map_err(|e| format!("{path}: {e}"))?;
        Ok(ActiveSet { grader, neighborhood, scale_by_atoms, symmetrize })
    }

    /// Grades `max_j |(b A^-1)_j|` of `k` rows b (row-major, k x m), by the
    /// product `mmtp_rs` grades with in Python (the same numbers for the same file).
    pub fn grades(&self, rows: &[f64], k: usize) -> Result<Vec<f64>, String> {
        self.grader.grades(&rows[..k * self.grader.m()], k).map(|(g, _)| g).map_err(|e| e.to_string())
    }
}

/// The local view of one LAMMPS rank as the core's explicit neighbour list:
/// centres 0..nlocal, neighbours within the cutoff (the skin is dropped).
///
/// # Safety
/// `x` holds 3 * nall numbers; `numneigh` nlocal counts; `firstneigh[i]`
/// numneigh[i] indices (masked with `mask`) below nall.
unsafe fn local_list(
    nlocal: usize,
    nall: usize,
    x: *const f64,
    numneigh: *const c_int,
    firstneigh: *const *const c_int,
    mask: c_int,
    cutoff: f64,
) -> Result<NeighborList, String> {
    let x = std::slice::from_raw_parts(x, 3 * nall);
    let rc2 = cutoff * cutoff;
    let mut nl = NeighborList { offsets: Vec::with_capacity(nlocal + 1), index: Vec::new(), vec: Vec::new() };
    nl.offsets.push(0);
    for i in 0..nlocal {
        let nn = *numneigh.add(i);
        let list = std::slice::from_raw_parts(*firstneigh.add(i), nn.max(0) as usize);
        let xi = [x[3 * i], x[3 * i + 1], x[3 * i + 2]];
        for &jr in list {
            let j = (jr & mask) as usize;
            if j >= nall {
                return Err(format!("neighbour {j} of atom {i} is beyond the {nall} local and ghost atoms"));
            }
            let v = [x[3 * j] - xi[0], x[3 * j + 1] - xi[1], x[3 * j + 2] - xi[2]];
            if v[0] * v[0] + v[1] * v[1] + v[2] * v[2] < rc2 {
                nl.index.push(j);
                nl.vec.push(v);
            }
        }
        nl.offsets.push(nl.index.len());
    }
    Ok(nl)
}

fn write_err(err: *mut c_char, len: usize, msg: &str) {
    if err.is_null() || len == 0 {
        return;
    }
    let b = msg.as_bytes();
    let n = b.len().min(len - 1);
    // SAFETY: the caller gives a buffer of `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), err as *mut u8, n);
        *err.add(n) = 0;
    }
}

/// Run `f`, turning an error or a panic into status 1 and a message.
fn guarded(err: *mut c_char, errlen: usize, f: impl FnOnce() -> Result<(), String>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            write_err(err, errlen, &msg);
            1
        }
        Err(_) => {
            write_err(err, errlen, "internal error (panic) in mmtp_rs");
            2
        }
    }
}

/// Read a file with `load` into a heap object owned by the caller; null on failure.
unsafe fn load_boxed<T>(
    path: *const c_char,
    err: *mut c_char,
    errlen: usize,
    load: impl FnOnce(&str) -> Result<T, String>,
) -> *mut T {
    let mut out = std::ptr::null_mut();
    guarded(err, errlen, || {
        if path.is_null() {
            return Err("no file name given".into());
        }
        out = Box::into_raw(Box::new(load(&CStr::from_ptr(path).to_string_lossy())?));
        Ok(())
    });
    out
}

/// Free an object made by [`load_boxed`].
unsafe fn free_boxed<T>(p: *mut T) {
    if !p.is_null() {
        drop(Box::from_raw(p));
    }
}

/// Load a potential; null on failure (message in `err`).
///
/// # Safety
/// `path` is a NUL-terminated string, `err` a buffer of `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmtp_model_load(path: *const c_char, err: *mut c_char, errlen: usize) -> *mut Model {
    load_boxed(path, err, errlen, Model::load)
}

/// Free a potential.
///
/// # Safety
/// `m` comes from [`mmtp_model_load`] and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mmtp_model_free(m: *mut Model) {
    free_boxed(m)
}

/// Cutoff, number of species, number of parameters and default symmetrisation.
///
/// # Safety
/// `m` is a live model; the out pointers are valid.
#[no_mangle]
pub unsafe extern "C" fn mmtp_model_info(
    m: *const Model,
    cutoff: *mut f64,
    n_species: *mut c_int,
    n_params: *mut c_int,
    symmetrize: *mut c_int,
) {
    let m = &*m;
    *cutoff = m.pot.max_dist;
    *n_species = m.species.len() as c_int;
    *n_params = m.pot.n_params() as c_int;
    *symmetrize = m.symmetrize as c_int;
}

/// Name of species `k` (NUL-terminated, truncated to `len`); status.
///
/// # Safety
/// `m` is a live model, `buf` a buffer of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmtp_model_species(m: *const Model, k: c_int, buf: *mut c_char, len: usize) -> c_int {
    let m = &*m;
    match m.species.get(k.max(0) as usize) {
        Some(s) if k >= 0 => {
            write_err(buf, len, s);
            0
        }
        _ => 1,
    }
}

/// Magnetic interval [lo, hi] (μB) of species `k`.
///
/// # Safety
/// `m` is a live model with more than `k` species; the out pointers are valid.
#[no_mangle]
pub unsafe extern "C" fn mmtp_model_moment_interval(m: *const Model, k: c_int, lo: *mut f64, hi: *mut f64) {
    let m = &*m;
    *lo = m.pot.mag_lo[k as usize];
    *hi = m.pot.mag_hi[k as usize];
}

/// Evaluate the local atoms of one LAMMPS rank.
///
/// Inputs: positions `x` (nall x 3), species index `species` (nall, 0-based),
/// moments `mag` (nall, μB), LAMMPS's full neighbour list of the local atoms
/// (`numneigh`, `firstneigh`, indices masked with `mask`).
/// `want`: bit 0 forces / dE/dm / virial, bit 1 the summed parameter gradient
/// of the local site energies, bit 2 the per-atom parameter gradients.
/// Outputs (each may be null when not wanted): `eatom` (nlocal, eV), `f`
/// (nall x 3, eV/Å, overwritten), `dedm` (nall, +dE/dm, eV/μB, overwritten),
/// `virial` (9, eV, row-major W = sum over pairs f (x) r), `grad` (n_params, or
/// nlocal x n_params with bit 2).
///
/// # Safety
/// Every pointer holds the number of values stated above.
#[no_mangle]
pub unsafe extern "C" fn mmtp_compute(
    m: *const Model,
    nlocal: c_int,
    nall: c_int,
    x: *const f64,
    species: *const c_int,
    mag: *const f64,
    numneigh: *const c_int,
    firstneigh: *const *const c_int,
    mask: c_int,
    symmetrize: c_int,
    want: c_int,
    eatom: *mut f64,
    f: *mut f64,
    dedm: *mut f64,
    virial: *mut f64,
    grad: *mut f64,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    guarded(err, errlen, || {
        let m = &*m;
        if nlocal < 0 || nall < nlocal {
            return Err(format!("bad atom counts: nlocal {nlocal}, nall {nall}"));
        }
        let (nlocal, nall) = (nlocal as usize, nall as usize);
        if nall == 0 {
            // a rank without atoms: nothing to add (its arrays may be null)
            if want & 1 != 0 && !virial.is_null() {
                std::slice::from_raw_parts_mut(virial, 9).fill(0.0);
            }
            if want & 2 != 0 && want & 4 == 0 && !grad.is_null() {
                std::slice::from_raw_parts_mut(grad, m.pot.n_params()).fill(0.0);
            }
            return Ok(());
        }
        let types: Vec<usize> = std::slice::from_raw_parts(species, nall)
            .iter()
            .map(|&t| usize::try_from(t).map_err(|_| format!("negative species index {t}")))
            .collect::<Result<_, _>>()?;
        let moments = std::slice::from_raw_parts(mag, nall);
        let nl = local_list(nlocal, nall, x, numneigh, firstneigh, mask, m.pot.max_dist)?;
        let forces = want & 1 != 0;
        let rows = want & 4 != 0;
        let opts = EvalOptions { symmetrize: symmetrize != 0, param_grad: want & 2 != 0 || rows, forces };
        let (out, site_rows) =
            threads::install(|| m.pot.evaluate_local(&types, moments, &nl, opts, rows)).map_err(|e| e.to_string())?;
        if !eatom.is_null() {
            std::slice::from_raw_parts_mut(eatom, nlocal).copy_from_slice(&out.site_energies);
        }
        if forces {
            if !f.is_null() {
                let fs = std::slice::from_raw_parts_mut(f, 3 * nall);
                for (dst, src) in fs.chunks_exact_mut(3).zip(&out.forces) {
                    dst.copy_from_slice(src);
                }
            }
            if !dedm.is_null() {
                std::slice::from_raw_parts_mut(dedm, nall).copy_from_slice(&out.dedm);
            }
            if !virial.is_null() {
                let v = std::slice::from_raw_parts_mut(virial, 9);
                for a in 0..3 {
                    v[3 * a..3 * a + 3].copy_from_slice(&out.virial[a]);
                }
            }
        }
        if !grad.is_null() {
            let np = m.pot.n_params();
            if rows {
                std::slice::from_raw_parts_mut(grad, nlocal * np).copy_from_slice(&site_rows);
            } else if want & 2 != 0 {
                std::slice::from_raw_parts_mut(grad, np).copy_from_slice(&out.param_grad);
            }
        }
        Ok(())
    })
}

/// Load an active set; null on failure (message in `err`).
///
/// # Safety
/// `path` is a NUL-terminated string, `err` a buffer of `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmtp_aset_load(path: *const c_char, err: *mut c_char, errlen: usize) -> *mut ActiveSet {
    load_boxed(path, err, errlen, ActiveSet::load)
}

/// Free an active set.
///
/// # Safety
/// `a` comes from [`mmtp_aset_load`] and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mmtp_aset_free(a: *mut ActiveSet) {
    free_boxed(a)
}

/// Size m, mode (1 = neighbourhood), scaling by atoms and symmetrisation of the rows.
///
/// # Safety
/// `a` is a live active set; the out pointers are valid.
#[no_mangle]
pub unsafe extern "C" fn mmtp_aset_info(
    a: *const ActiveSet,
    m: *mut c_int,
    neighborhood: *mut c_int,
    scale_by_atoms: *mut c_int,
    symmetrize: *mut c_int,
) {
    let a = &*a;
    *m = a.grader.m() as c_int;
    *neighborhood = a.neighborhood as c_int;
    *scale_by_atoms = a.scale_by_atoms as c_int;
    *symmetrize = a.symmetrize as c_int;
}

/// Grades of `k` rows (k x m, row-major) into `out` (k); status.
///
/// # Safety
/// `rows` holds k * m numbers, `out` k.
#[no_mangle]
pub unsafe extern "C" fn mmtp_aset_grades(
    a: *const ActiveSet,
    rows: *const f64,
    k: c_int,
    out: *mut f64,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    guarded(err, errlen, || {
        let a = &*a;
        let k = k.max(0) as usize;
        let b = std::slice::from_raw_parts(rows, k * a.grader.m());
        let g = threads::install(|| a.grades(b, k))?;
        std::slice::from_raw_parts_mut(out, k).copy_from_slice(&g);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_errors_with_the_file_name() {
        let dir = std::env::temp_dir().join(format!("mmtp-lammps-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.mmtp");
        assert!(Model::load(missing.to_str().unwrap()).unwrap_err().contains("missing.mmtp"));
        let wrong = dir.join("wrong.txt");
        std::fs::write(&wrong, "something else 1\n").unwrap();
        assert!(Model::load(wrong.to_str().unwrap()).unwrap_err().contains("not a"));
        let short = dir.join("short.txt");
        std::fs::write(&short, format!("{ACTIVE_SET_TAG} 1\nmode configuration\nscale_by_atoms 1\nsymmetrize 1\nm 2\ninverse\n1 0 0\n")).unwrap();
        assert!(ActiveSet::load(short.to_str().unwrap()).unwrap_err().contains("ends before"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn grades_are_the_largest_coefficient_of_b_times_the_inverse() {
        let a = ActiveSet {
            grader: Grader::new(2, vec![2.0, 0.0, 1.0, -3.0]).unwrap(),
            neighborhood: true,
            scale_by_atoms: false,
            symmetrize: true,
        };
        // (1, 1) A^-1 = (3, -3); (0, 0.5) A^-1 = (0.5, -1.5)
        assert_eq!(a.grades(&[1.0, 1.0, 0.0, 0.5], 2).unwrap(), vec![3.0, 1.5]);
    }
}
