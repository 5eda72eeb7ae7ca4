//! Criterion benches of the core kernels on rock-salt CrN-like supercells
//! with a level-16-sized random basis: neighbour list, forward evaluation,
//! full evaluation (forces, virial, magnetic forces) and dE/dtheta.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mmtp_core::basis_gen::generate;
use mmtp_core::{neighbors, Config, EvalOptions, Potential, Tables};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn crn(reps: usize, rng: &mut ChaCha8Rng) -> Config {
    let a = 4.15;
    let mut positions = Vec::new();
    let mut types = Vec::new();
    let mut moments = Vec::new();
    let basis = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]];
    for i in 0..reps {
        for j in 0..reps {
            for k in 0..reps {
                for b in basis {
                    for (t, off) in [(1usize, 0.0), (0usize, 0.5)] {
                        positions.push([
                            a * (i as f64 + b[0] + off) + rng.gen_range(-0.05..0.05),
                            a * (j as f64 + b[1]) + rng.gen_range(-0.05..0.05),
                            a * (k as f64 + b[2]) + rng.gen_range(-0.05..0.05),
                        ]);
                        types.push(t);
                        moments.push(if t == 1 { if rng.gen_bool(0.5) { 2.4 } else { -2.4 } } else { 0.02 });
                    }
                }
            }
        }
    }
    let l = a * reps as f64;
    Config { lattice: [[l, 0.0, 0.0], [0.0, l, 0.0], [0.0, 0.0, l]], pbc: [true; 3], positions, types, moments }
}

fn potential(rng: &mut ChaCha8Rng) -> Potential {
    let g = generate(16).expect("level 16 basis");
    let t = Tables {
        basic: g.basic.clone(),
        times: g.times.iter().map(|&(i, j, m, k)| (i, j, m as f64, k)).collect(),
        n_moments: g.n_moments,
        scalars: g.scalars.clone(),
    };
    let n = 2 * 2 * t.n_radial() * 8 * 4 + 2 + t.scalars.len();
    let params = (0..n).map(|_| rng.gen_range(-0.1..0.1)).collect();
    Potential::new(2, 0.02, 1.7, 5.0, 8, 2, vec![-0.1, -3.2], vec![0.1, 3.2], t, params).expect("potential")
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pot = potential(&mut rng);
    let mut g = c.benchmark_group("crn_level16");
    g.sample_size(10);
    for reps in [2usize, 4] {
        let cfg = crn(reps, &mut rng);
        let n = cfg.positions.len();
        let nl = neighbors::build(&cfg.lattice, cfg.pbc, &cfg.positions, 5.0).expect("nl");
        g.bench_with_input(BenchmarkId::new("neighbor_list", n), &cfg, |b, cfg| {
            b.iter(|| neighbors::build(&cfg.lattice, cfg.pbc, &cfg.positions, 5.0).expect("nl"))
        });
        let cases = [
            ("forward_energy_only", EvalOptions { symmetrize: true, param_grad: false, forces: false }),
            ("forward_backward_raw", EvalOptions { symmetrize: false, param_grad: false, forces: true }),
            ("forward_backward_symmetrized", EvalOptions { symmetrize: true, param_grad: false, forces: true }),
            ("with_param_grad_symmetrized", EvalOptions { symmetrize: true, param_grad: true, forces: true }),
        ];
        for (name, opts) in cases {
            g.bench_with_input(BenchmarkId::new(name, n), &cfg, |b, cfg| b.iter(|| pot.evaluate_with(cfg, &nl, opts)));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
