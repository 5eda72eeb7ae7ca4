//! Quick timing of the evaluation kernel on a 512-atom rock-salt CrN cell with
//! a level-16 basis (best of many repeats, microseconds per atom, one thread).
//! `cargo run --release --example kernel_timing`

use mmtp_core::basis_gen::generate;
use mmtp_core::{neighbors, Config, EvalOptions, Potential, Tables};
use std::time::Instant;

fn main() {
    let g = generate(16).expect("basis");
    let t = Tables {
        basic: g.basic.clone(),
        times: g.times.iter().map(|&(i, j, m, k)| (i, j, m as f64, k)).collect(),
        n_moments: g.n_moments,
        scalars: g.scalars.clone(),
    };
    let n = 4 * t.n_radial() * 8 * 4 + 2 + t.scalars.len();
    let mut x = 0.37f64;
    let params: Vec<f64> = (0..n)
        .map(|_| {
            x = (x * 997.0 + 0.123).fract();
            (x - 0.5) * 0.2
        })
        .collect();
    let pot = Potential::new(2, 0.02, 1.7, 5.0, 8, 2, vec![-0.1, -3.2], vec![0.1, 3.2], t, params).expect("pot");
    let a = 4.15;
    let reps: usize = std::env::var("REPS").ok().and_then(|x| x.parse().ok()).unwrap_or(4);
    let mut positions = vec![];
    let mut types = vec![];
    let mut moments = vec![];
    for i in 0..reps {
        for j in 0..reps {
            for k in 0..reps {
                for b in [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]] {
                    for (ty, off) in [(1usize, 0.0), (0usize, 0.5)] {
                        positions.push([a * (i as f64 + b[0] + off), a * (j as f64 + b[1]), a * (k as f64 + b[2])]);
                        types.push(ty);
                        moments.push(if ty == 1 { if (i + j + k) % 2 == 0 { 2.4 } else { -2.4 } } else { 0.02 });
                    }
                }
            }
        }
    }
    let l = a * reps as f64;
    let cfg = Config { lattice: [[l, 0.0, 0.0], [0.0, l, 0.0], [0.0, 0.0, l]], pbc: [true; 3], positions, types, moments };
    let nl = neighbors::build(&cfg.lattice, cfg.pbc, &cfg.positions, 5.0).expect("nl");
    let natoms = cfg.positions.len() as f64;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    for (name, opts) in [
        ("energy only, raw", EvalOptions { symmetrize: false, param_grad: false, forces: false }),
        ("energy only, sym", EvalOptions { symmetrize: true, param_grad: false, forces: false }),
        ("forces, raw", EvalOptions { symmetrize: false, param_grad: false, forces: true }),
        ("forces, sym", EvalOptions { symmetrize: true, param_grad: false, forces: true }),
        ("forces+grad, sym", EvalOptions { symmetrize: true, param_grad: true, forces: true }),
    ] {
        let mut best = f64::INFINITY;
        let nrep: usize = std::env::var("NREP").ok().and_then(|x| x.parse().ok()).unwrap_or(15);
        if std::env::var("ONLY").map(|o| o != name).unwrap_or(false) { continue; }
        for _ in 0..nrep {
            let t0 = Instant::now();
            let o = pool.install(|| pot.evaluate_with(&cfg, &nl, opts));
            std::hint::black_box(o);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!("{name:20} {:7.2} us/atom", best / natoms * 1e6);
    }
}
