//! Deterministic randomized inputs to everything of the core that takes outside
//! input (potential construction from file tables, neighbour search, evaluation,
//! loss): every call must return Ok or Err, never panic, and an Ok evaluation
//! must be finite.

use mmtp_core::basis_gen::generate;
use mmtp_core::loss::{self, Dataset, Labels, LossWeights};
use mmtp_core::{neighbors, Config, EvalOptions, Potential, Tables};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NASTY: [f64; 12] = [f64::NAN, f64::INFINITY, -f64::INFINITY, 1e308, -1e308, 1e100, 1e-300, 0.0, -1.0, 1e30, 1e31, 200.0];

fn value(rng: &mut ChaCha8Rng, normal: f64) -> f64 {
    if rng.gen_bool(0.1) {
        NASTY[rng.gen_range(0..NASTY.len())]
    } else {
        normal * rng.gen_range(0.5..1.5)
    }
}

fn size(rng: &mut ChaCha8Rng, normal: usize) -> usize {
    match rng.gen_range(0..20) {
        0 => 0,
        1 => usize::MAX,
        2 => 1 << 40,
        3 => 1_000_000_000,
        _ => normal,
    }
}

fn level8() -> Tables {
    let g = generate(8).expect("level 8");
    Tables {
        basic: g.basic.clone(),
        times: g.times.iter().map(|&(i, j, m, k)| (i, j, m as f64, k)).collect(),
        n_moments: g.n_moments,
        scalars: g.scalars.clone(),
    }
}

fn random_tables(rng: &mut ChaCha8Rng, base: &Tables) -> Tables {
    let mut t = base.clone();
    for _ in 0..rng.gen_range(0..3) {
        match rng.gen_range(0..6) {
            0 => t.n_moments = size(rng, t.n_moments),
            1 if !t.basic.is_empty() => {
                let k = rng.gen_range(0..t.basic.len());
                let c = rng.gen_range(0..4);
                t.basic[k][c] = size(rng, 40);
            }
            2 if !t.times.is_empty() => {
                let k = rng.gen_range(0..t.times.len());
                t.times[k] = (size(rng, t.times[k].0), size(rng, t.times[k].1), value(rng, 1.0), size(rng, t.times[k].3));
            }
            3 if !t.scalars.is_empty() => {
                let k = rng.gen_range(0..t.scalars.len());
                t.scalars[k] = size(rng, t.scalars[k]);
            }
            4 => {
                let n = rng.gen_range(0..t.times.len() + 1);
                t.times.truncate(n);
            }
            _ => {
                let n = rng.gen_range(0..t.basic.len() + 1);
                t.basic.truncate(n);
            }
        }
    }
    t
}

fn random_potential(rng: &mut ChaCha8Rng, base: &Tables) -> Option<Potential> {
    let c = if rng.gen_bool(0.05) { size(rng, 1) } else { rng.gen_range(1..3) };
    let (n_phi, n_psi) = (if rng.gen_bool(0.05) { size(rng, 4) } else { 4 }, rng.gen_range(1..4));
    let t = random_tables(rng, base);
    let cc = c.min(4);
    let n = (cc * cc * t.n_radial().min(64) * n_phi.min(64) * n_psi * n_psi + cc + t.scalars.len()).min(1 << 20);
    let params: Vec<f64> = (0..n + rng.gen_range(0..2)).map(|_| if rng.gen_bool(0.01) { value(rng, 0.1) } else { rng.gen_range(-0.1..0.1) }).collect();
    let lo: Vec<f64> = (0..cc).map(|_| -value(rng, 3.0)).collect();
    let hi: Vec<f64> = (0..cc).map(|_| value(rng, 3.0)).collect();
    let min_dist = value(rng, 1.5);
    let max_dist = value(rng, 4.5);
    Potential::new(c, value(rng, 0.05), min_dist, max_dist, n_phi, n_psi, lo, hi, t, params).ok()
}

fn random_config(rng: &mut ChaCha8Rng, n_species: usize) -> Config {
    let n = rng.gen_range(0..6);
    let edge = if rng.gen_bool(0.1) { value(rng, 0.02) } else { rng.gen_range(2.0..6.0) };
    let mut lattice = [[0.0; 3]; 3];
    for (a, row) in lattice.iter_mut().enumerate() {
        row[a] = edge;
        if rng.gen_bool(0.05) {
            row[rng.gen_range(0..3)] = value(rng, 1.0);
        }
    }
    let positions = (0..n).map(|_| [value(rng, 2.0), rng.gen_range(0.0..edge.abs().min(6.0) + 0.1), 1.0]).collect();
    let types = (0..n).map(|_| if rng.gen_bool(0.05) { size(rng, 0) } else { rng.gen_range(0..n_species) }).collect();
    let moments = (0..n).map(|_| value(rng, 2.0)).collect();
    let pbc = [rng.gen_bool(0.8), rng.gen_bool(0.8), rng.gen_bool(0.8)];
    Config { lattice, pbc, positions, types, moments }
}

#[test]
fn random_potentials_and_configurations_never_panic() {
    let base = level8();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let (mut built, mut evaluated) = (0, 0);
    for _ in 0..3000 {
        let Some(pot) = random_potential(&mut rng, &base) else { continue };
        built += 1;
        for _ in 0..3 {
            let cfg = random_config(&mut rng, pot.n_species);
            let opts = EvalOptions::new(rng.gen_bool(0.5), rng.gen_bool(0.5));
            if let Ok((out, _)) = pot.evaluate_checked(&cfg, opts, rng.gen_bool(0.2)) {
                evaluated += 1;
                assert!(out.energy.is_finite() && out.forces.iter().flatten().all(|x| x.is_finite()));
            }
            if pot.check_config(&cfg).is_ok() {
                let labels = Labels { energy: Some(value(&mut rng, 1.0)), ..Default::default() };
                if let Ok(data) = Dataset::new(vec![cfg], vec![labels], pot.max_dist) {
                    let w = LossWeights { energy: 1.0, forces: 0.0, stress: 0.0, magnetic: 0.0, energy_per_atom: false };
                    if let Ok(out) = loss::loss(&pot, &data, None, w, true, true) {
                        assert!(out.loss.is_finite() && out.grad.iter().all(|x| x.is_finite()));
                    }
                }
            }
        }
    }
    assert!(built > 300 && evaluated > 300, "built {built}, evaluated {evaluated}");
}

#[test]
fn random_neighbour_searches_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..3000 {
        let cfg = random_config(&mut rng, 1);
        let cutoff = value(&mut rng, 4.0);
        if let Ok(nl) = neighbors::build(&cfg.lattice, cfg.pbc, &cfg.positions, cutoff) {
            assert_eq!(nl.n_atoms(), cfg.positions.len());
        }
    }
}
