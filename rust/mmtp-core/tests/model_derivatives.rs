//! Finite-difference checks of every derivative of the model, with a small
//! level-8 basis (the tables of MLIP's level 8) and random parameters.

use mmtp_core::{Config, EvalOptions, Potential, Tables};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn level8_tables() -> Tables {
    let basic = vec![
        [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 2, 0, 0], [0, 1, 1, 0],
        [0, 1, 0, 1], [0, 0, 2, 0], [0, 0, 1, 1], [0, 0, 0, 2], [1, 0, 0, 0],
    ];
    let times = vec![
        (0, 0, 1.0, 11), (1, 1, 1.0, 12), (2, 2, 1.0, 12), (3, 3, 1.0, 12), (4, 4, 1.0, 13),
        (5, 5, 2.0, 13), (6, 6, 2.0, 13), (7, 7, 1.0, 13), (8, 8, 2.0, 13), (9, 9, 1.0, 13),
        (0, 10, 1.0, 14), (0, 11, 1.0, 15), (0, 12, 1.0, 16), (0, 15, 1.0, 17),
    ];
    Tables { basic, times, n_moments: 18, scalars: vec![0, 10, 11, 12, 13, 14, 15, 16, 17] }
}

fn random_potential(rng: &mut ChaCha8Rng, n_species: usize, n_psi: usize) -> Potential {
    let t = level8_tables();
    let np = n_species * n_species * 2 * 5 * n_psi * n_psi + n_species + t.scalars.len();
    let params: Vec<f64> = (0..np).map(|_| rng.gen_range(-0.5..0.5)).collect();
    // asymmetric intervals for odd n_psi (the symmetrised kernel evaluates both
    // signs), symmetric ones for even n_psi (it serves both signs in one pass)
    let hi: Vec<f64> = (0..n_species).map(|z| 2.5 + 0.2 * z as f64).collect();
    let lo: Vec<f64> = if n_psi % 2 == 0 {
        hi.iter().map(|h| -h).collect()
    } else {
        (0..n_species).map(|z| -2.0 - 0.3 * z as f64).collect()
    };
    Potential::new(n_species, 0.3, 1.5, 4.2, 5, n_psi, lo, hi, t, params).unwrap()
}

fn random_config(rng: &mut ChaCha8Rng, n: usize, n_species: usize, pbc: [bool; 3]) -> Config {
    let mut lattice = [[0.0; 3]; 3];
    for a in 0..3 {
        for k in 0..3 {
            lattice[a][k] = rng.gen_range(-0.4..0.4) + if a == k { 3.6 } else { 0.0 };
        }
    }
    // jittered grid to avoid overlaps
    let mut positions = Vec::new();
    for q in 0..n {
        let g = [(q % 2) as f64, ((q / 2) % 2) as f64, (q / 4) as f64];
        positions.push([
            1.7 * g[0] + rng.gen_range(-0.3..0.3),
            1.7 * g[1] + rng.gen_range(-0.3..0.3),
            1.7 * g[2] + rng.gen_range(-0.3..0.3),
        ]);
    }
    Config {
        lattice,
        pbc,
        positions,
        types: (0..n).map(|_| rng.gen_range(0..n_species)).collect(),
        moments: (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect(),
    }
}

#[test]
fn forces_virial_magnetic_and_parameter_gradient_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (case, &(ns, npsi, sym, pbc)) in [
        (1, 2, false, [true; 3]),
        (2, 3, true, [true; 3]),
        (3, 2, true, [true, false, true]),
        (2, 1, false, [false; 3]),
    ]
    .iter()
    .enumerate()
    {
        let pot = random_potential(&mut rng, ns, npsi);
        let cfg = random_config(&mut rng, 5, ns, pbc);
        let opts = EvalOptions::new(sym, true);
        let out = pot.evaluate(&cfg, opts).unwrap();
        let e = |c: &Config, p: &Potential| p.evaluate(c, opts).unwrap().energy;
        let h = 1e-5;
        for i in 0..cfg.positions.len() {
            for a in 0..3 {
                let mut cp = cfg.clone();
                cp.positions[i][a] += h;
                let mut cm = cfg.clone();
                cm.positions[i][a] -= h;
                let fd = -(e(&cp, &pot) - e(&cm, &pot)) / (2.0 * h);
                assert!((fd - out.forces[i][a]).abs() < 1e-6 * (1.0 + fd.abs()), "case {case} force {i} {a}: {fd} vs {}", out.forces[i][a]);
            }
            let mut cp = cfg.clone();
            cp.moments[i] += h;
            let mut cm = cfg.clone();
            cm.moments[i] -= h;
            let fd = (e(&cp, &pot) - e(&cm, &pot)) / (2.0 * h);
            assert!((fd - out.dedm[i]).abs() < 1e-6 * (1.0 + fd.abs()), "case {case} dE/dm {i}: {fd} vs {}", out.dedm[i]);
        }
        if pbc == [true; 3] {
            // virial: W = -dE/deps with positions and lattice strained together
            for a in 0..3 {
                for b in 0..3 {
                    let strain = |s: f64| {
                        let mut c = cfg.clone();
                        let apply = |v: [f64; 3]| {
                            let mut w = v;
                            w[a] += s * v[b];
                            w
                        };
                        c.positions = c.positions.iter().map(|p| apply(*p)).collect();
                        for r in 0..3 {
                            c.lattice[r] = apply(c.lattice[r]);
                        }
                        c
                    };
                    let fd = -(e(&strain(h), &pot) - e(&strain(-h), &pot)) / (2.0 * h);
                    assert!((fd - out.virial[a][b]).abs() < 1e-6 * (1.0 + fd.abs()), "case {case} virial {a}{b}: {fd} vs {}", out.virial[a][b]);
                }
            }
        }
        for k in 0..pot.n_params() {
            let mut pp = pot.clone();
            let mut th = pot.params().to_vec();
            th[k] += h;
            pp.set_params(th.clone()).unwrap();
            let ep = e(&cfg, &pp);
            th[k] -= 2.0 * h;
            pp.set_params(th).unwrap();
            let em = e(&cfg, &pp);
            let fd = (ep - em) / (2.0 * h);
            assert!((fd - out.param_grad[k]).abs() < 1e-6 * (1.0 + fd.abs()), "case {case} param {k}: {fd} vs {}", out.param_grad[k]);
        }
        let sum: f64 = out.site_energies.iter().sum();
        assert!((sum - out.energy).abs() < 1e-12 * (1.0 + sum.abs()));
    }
}

#[test]
fn symmetrised_energy_is_spin_inversion_invariant_and_raw_is_not() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let pot = random_potential(&mut rng, 2, 3);
    let cfg = random_config(&mut rng, 6, 2, [true; 3]);
    let mut flipped = cfg.clone();
    for m in flipped.moments.iter_mut() {
        *m = -*m;
    }
    for sym in [true, false] {
        let o = EvalOptions::new(sym, false);
        let a = pot.evaluate(&cfg, o).unwrap();
        let b = pot.evaluate(&flipped, o).unwrap();
        let diff = (a.energy - b.energy).abs();
        if sym {
            assert!(diff < 1e-11 * (1.0 + a.energy.abs()));
            for i in 0..6 {
                assert!((a.dedm[i] + b.dedm[i]).abs() < 1e-10);
            }
        } else {
            assert!(diff > 1e-6, "raw energy should change under spin inversion");
        }
    }
}

#[test]
fn site_gradients_sum_to_the_total_and_match_site_energy_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let pot = random_potential(&mut rng, 2, 3);
    let cfg = random_config(&mut rng, 5, 2, [true; 3]);
    let nl = pot.neighbors(&cfg).unwrap();
    for sym in [false, true] {
        let rows = pot.site_param_grad(&cfg, &nl, sym);
        let np = pot.n_params();
        let total = pot.evaluate(&cfg, EvalOptions::new(sym, true)).unwrap().param_grad;
        for k in 0..np {
            let s: f64 = (0..5).map(|i| rows[i * np + k]).sum();
            assert!((s - total[k]).abs() < 1e-10 * (1.0 + total[k].abs()));
        }
        let h = 1e-6;
        for k in (0..np).step_by(7) {
            let mut th = pot.params().to_vec();
            th[k] += h;
            let mut pp = pot.clone();
            pp.set_params(th.clone()).unwrap();
            let ep = pp.evaluate(&cfg, EvalOptions::new(sym, false)).unwrap().site_energies;
            th[k] -= 2.0 * h;
            pp.set_params(th).unwrap();
            let em = pp.evaluate(&cfg, EvalOptions::new(sym, false)).unwrap().site_energies;
            for i in 0..5 {
                let fd = (ep[i] - em[i]) / (2.0 * h);
                assert!((fd - rows[i * np + k]).abs() < 1e-6 * (1.0 + fd.abs()), "site {i} param {k}");
            }
        }
    }
}

#[test]
fn directional_derivative_of_the_parameter_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for &(ns, npsi, sym) in &[(1, 2, false), (2, 3, true)] {
        let pot = random_potential(&mut rng, ns, npsi);
        let cfg = random_config(&mut rng, 5, ns, [true; 3]);
        let dpos: Vec<[f64; 3]> = (0..5).map(|_| [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)]).collect();
        let dmom: Vec<f64> = (0..5).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut strain = [[0.0; 3]; 3];
        for a in 0..3 {
            for b in 0..3 {
                strain[a][b] = rng.gen_range(-0.5..0.5);
            }
        }
        let nl = pot.neighbors(&cfg).unwrap();
        let (e, g, dg) = pot.param_grad_directional(&cfg, &nl, sym, &dpos, &dmom, &strain);
        let plain = pot.evaluate(&cfg, EvalOptions::new(sym, true)).unwrap();
        assert!((e - plain.energy).abs() < 1e-10 * (1.0 + e.abs()));
        for k in 0..g.len() {
            assert!((g[k] - plain.param_grad[k]).abs() < 1e-10 * (1.0 + g[k].abs()));
        }
        let h = 1e-5;
        let moved = |eps: f64| {
            let mut c = cfg.clone();
            let apply = |v: [f64; 3]| {
                let mut w = v;
                for a in 0..3 {
                    w[a] += eps * (strain[a][0] * v[0] + strain[a][1] * v[1] + strain[a][2] * v[2]);
                }
                w
            };
            for i in 0..5 {
                let p = apply(cfg.positions[i]);
                for a in 0..3 {
                    c.positions[i][a] = p[a] + eps * dpos[i][a];
                }
                c.moments[i] += eps * dmom[i];
            }
            for r in 0..3 {
                c.lattice[r] = apply(cfg.lattice[r]);
            }
            pot.evaluate(&c, EvalOptions::new(sym, true)).unwrap().param_grad
        };
        // fourth-order central differences
        let (gp, gm, gp2, gm2) = (moved(h), moved(-h), moved(2.0 * h), moved(-2.0 * h));
        for k in 0..g.len() {
            let fd = (8.0 * (gp[k] - gm[k]) - (gp2[k] - gm2[k])) / (12.0 * h);
            assert!((fd - dg[k]).abs() < 1e-6 * (1.0 + fd.abs()), "param {k}: {fd} vs {}", dg[k]);
        }
    }
}

#[test]
fn loss_gradient_matches_finite_differences_for_every_term() {
    use mmtp_core::loss::{loss, Dataset, Labels, LossWeights};
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let pot = random_potential(&mut rng, 2, 3);
    let mut configs = vec![];
    let mut labels = vec![];
    for c in 0..3 {
        let cfg = random_config(&mut rng, 4 + c, 2, [true; 3]);
        let n = cfg.positions.len();
        labels.push(Labels {
            energy: Some(rng.gen_range(-5.0..5.0)),
            forces: Some((0..n).map(|_| [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)]).collect()),
            stress: if c == 1 { None } else { Some([0.01, -0.02, 0.005, 0.001, 0.0, -0.003]) },
            magnetic_forces: if c == 2 { None } else { Some((0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()) },
        });
        configs.push(cfg);
    }
    let data = Dataset::new(configs, labels, pot.max_dist).unwrap();
    let terms = [(1.0, 0.0, 0.0, 0.0), (0.0, 0.3, 0.0, 0.0), (0.0, 0.0, 0.01, 0.0), (0.0, 0.0, 0.0, 0.2), (1.0, 0.01, 0.001, 0.1)];
    for sym in [false, true] {
        for &(we, wf, ws, wt) in &terms {
            for per_atom in [false, true] {
                let w = LossWeights { energy: we, forces: wf, stress: ws, magnetic: wt, energy_per_atom: per_atom };
                let out = loss(&pot, &data, None, w, sym, true).unwrap();
                let h = 1e-5;
                for k in (0..pot.n_params()).step_by(5) {
                    let at = |x: f64| {
                        let mut th = pot.params().to_vec();
                        th[k] += x;
                        let mut pp = pot.clone();
                        pp.set_params(th).unwrap();
                        loss(&pp, &data, None, w, sym, false).unwrap().loss
                    };
                    // fourth-order central differences
                    let fd = (8.0 * (at(h) - at(-h)) - (at(2.0 * h) - at(-2.0 * h))) / (12.0 * h);
                    assert!(
                        (fd - out.grad[k]).abs() < 1e-4 * (1.0 + fd.abs()),
                        "weights {:?} sym {sym} per_atom {per_atom} param {k}: {fd} vs {}",
                        (we, wf, ws, wt),
                        out.grad[k]
                    );
                }
            }
        }
    }
}

/// A domain's view (centres plus one ghost atom per neighbour entry, as an MD
/// engine's domain decomposition gives it) evaluated by `evaluate_local`,
/// ghost contributions summed back into their owners, equals `evaluate`.
#[test]
fn local_evaluation_with_ghost_atoms_equals_evaluate() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for &(ns, npsi, sym) in &[(2, 3, true), (2, 2, false), (1, 1, true)] {
        let pot = random_potential(&mut rng, ns, npsi);
        let cfg = random_config(&mut rng, 7, ns, [true; 3]);
        let nl = pot.neighbors(&cfg).unwrap();
        let n = cfg.positions.len();
        let opts = EvalOptions::new(sym, true);
        let full = pot.evaluate(&cfg, opts).unwrap();
        let (rows_ref_out, rows_ref) = pot.evaluate_with_sites(&cfg, &nl, opts);
        // ghosts: neighbour entry k becomes atom n + k, an image of nl.index[k]
        let mut types = cfg.types.clone();
        let mut moments = cfg.moments.clone();
        let mut local = nl.clone();
        for k in 0..nl.n_pairs() {
            types.push(cfg.types[nl.index[k]]);
            moments.push(cfg.moments[nl.index[k]]);
            local.index[k] = n + k;
        }
        let (out, rows) = pot.evaluate_local(&types, &moments, &local, opts, true).unwrap();
        assert_eq!(out.site_energies.len(), n);
        assert_eq!(out.forces.len(), n + nl.n_pairs());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()));
        assert!(close(out.energy, full.energy));
        let mut f = out.forces[..n].to_vec();
        let mut dedm = out.dedm[..n].to_vec();
        for k in 0..nl.n_pairs() {
            for a in 0..3 {
                f[nl.index[k]][a] += out.forces[n + k][a];
            }
            dedm[nl.index[k]] += out.dedm[n + k];
        }
        for i in 0..n {
            assert!(close(dedm[i], full.dedm[i]));
            for a in 0..3 {
                assert!(close(f[i][a], full.forces[i][a]), "force {i} {a}: {} vs {}", f[i][a], full.forces[i][a]);
            }
        }
        for a in 0..3 {
            for b in 0..3 {
                assert!(close(out.virial[a][b], full.virial[a][b]));
            }
        }
        for (x, y) in out.param_grad.iter().zip(&rows_ref_out.param_grad) {
            assert!(close(*x, *y));
        }
        for (x, y) in rows.iter().zip(&rows_ref) {
            assert!(close(*x, *y));
        }
        // bad input is an error, not a panic
        assert!(pot.evaluate_local(&types[..n], &moments[..n], &local, opts, false).is_err());
    }
}

/// The one-pass symmetrised kernel (symmetric intervals) equals the explicit
/// average of two raw evaluations, (E(M) + E(-M)) / 2, in every output:
/// energy, site energies, forces, virial, dE/dm, parameter gradient, and the
/// directional derivative of the parameter gradient (dual numbers).
#[test]
fn one_pass_symmetrisation_equals_the_average_of_both_signs() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for &(ns, npsi) in &[(1usize, 2usize), (2, 2), (2, 4), (3, 5)] {
        let mut pot = random_potential(&mut rng, ns, npsi);
        for z in 0..ns {
            pot.mag_lo[z] = -pot.mag_hi[z];
        }
        let cfg = random_config(&mut rng, 7, ns, [true; 3]);
        let mut flipped = cfg.clone();
        for m in flipped.moments.iter_mut() {
            *m = -*m;
        }
        let sym = pot.evaluate(&cfg, EvalOptions::new(true, true)).unwrap();
        let a = pot.evaluate(&cfg, EvalOptions::new(false, true)).unwrap();
        let b = pot.evaluate(&flipped, EvalOptions::new(false, true)).unwrap();
        let close = |x: f64, y: f64, what: &str| {
            assert!((x - y).abs() <= 1e-11 * (1.0 + x.abs().max(y.abs())), "{what}: {x} vs {y} (ns {ns}, npsi {npsi})");
        };
        close(sym.energy, 0.5 * (a.energy + b.energy), "energy");
        for i in 0..7 {
            close(sym.site_energies[i], 0.5 * (a.site_energies[i] + b.site_energies[i]), "site energy");
            close(sym.dedm[i], 0.5 * (a.dedm[i] - b.dedm[i]), "dE/dm");
            for k in 0..3 {
                close(sym.forces[i][k], 0.5 * (a.forces[i][k] + b.forces[i][k]), "force");
            }
        }
        for r in 0..3 {
            for c in 0..3 {
                close(sym.virial[r][c], 0.5 * (a.virial[r][c] + b.virial[r][c]), "virial");
            }
        }
        for (k, g) in sym.param_grad.iter().enumerate() {
            close(*g, 0.5 * (a.param_grad[k] + b.param_grad[k]), "parameter gradient");
        }
        let nl = pot.neighbors(&cfg).unwrap();
        let dpos: Vec<[f64; 3]> = (0..7).map(|_| [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)]).collect();
        let dmom: Vec<f64> = (0..7).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let neg: Vec<f64> = dmom.iter().map(|d| -d).collect();
        let strain = [[0.1, 0.02, 0.0], [0.02, -0.05, 0.01], [0.0, 0.01, 0.03]];
        let (es, gs, ds) = pot.param_grad_directional(&cfg, &nl, true, &dpos, &dmom, &strain);
        let (ea, ga, da) = pot.param_grad_directional(&cfg, &nl, false, &dpos, &dmom, &strain);
        let (eb, gb, db) = pot.param_grad_directional(&flipped, &nl, false, &dpos, &neg, &strain);
        close(es, 0.5 * (ea + eb), "energy (dual)");
        for k in 0..gs.len() {
            close(gs[k], 0.5 * (ga[k] + gb[k]), "parameter gradient (dual)");
            close(ds[k], 0.5 * (da[k] + db[k]), "directional derivative of the parameter gradient");
        }
    }
}
