//! Chebyshev polynomials of the first kind and their derivatives.

use crate::num::Num;

/// Fill `t[k] = T_k(x)` and `dt[k] = T_k'(x)` for k = 0..t.len().
#[inline]
pub fn cheb_with_deriv<T: Num>(x: T, t: &mut [T], dt: &mut [T]) {
    let n = t.len().min(dt.len());
    if n == 0 {
        return;
    }
    t[0] = T::cst(1.0);
    dt[0] = T::cst(0.0);
    if n == 1 {
        return;
    }
    t[1] = x;
    dt[1] = T::cst(1.0);
    let x2 = x * 2.0;
    for k in 1..n - 1 {
        t[k + 1] = x2 * t[k] - t[k - 1];
        dt[k + 1] = t[k] * 2.0 + x2 * dt[k] - dt[k - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cosine_definition_and_derivative() {
        let mut t = [0.0f64; 9];
        let mut dt = [0.0f64; 9];
        for &x in &[-0.93, -0.2, 0.0, 0.41, 0.999] {
            cheb_with_deriv(x, &mut t, &mut dt);
            let th: f64 = f64::acos(x);
            for k in 0..9 {
                assert!((t[k] - (k as f64 * th).cos()).abs() < 1e-12);
                // d/dx cos(k acos x) = k sin(k th) / sin(th)
                let d = k as f64 * (k as f64 * th).sin() / th.sin();
                assert!((dt[k] - d).abs() < 1e-9 * (1.0 + d.abs()), "k={k} x={x}");
            }
        }
    }
}
