//! The scalar types the kernel runs on: `f64`, and a dual number carrying
//! one directional derivative (forward mode). Running the parameter-gradient
//! pass on dual numbers gives the exact derivative of dE/dtheta along a
//! direction in configuration space, which is what the training loss needs
//! for its force, stress and magnetic-force terms.

use std::ops::{Add, AddAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real scalar or a dual number.
pub trait Num:
    Copy
    + Default
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Mul<f64, Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign<f64>
    + 'static
{
    /// Embed a constant.
    fn cst(x: f64) -> Self;
    /// Real part.
    fn re(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// 1 / self.
    fn recip(self) -> Self;
    /// `self * a + b`, with one rounding when `FUSED` (meant for code compiled
    /// with the FMA target feature, where it is one instruction).
    fn fma<const FUSED: bool>(self, a: Self, b: Self) -> Self;
    /// `self * a + b` for a real constant `a`, fused like [`Num::fma`].
    fn fma_c<const FUSED: bool>(self, a: f64, b: Self) -> Self;
}

impl Num for f64 {
    #[inline(always)]
    fn cst(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn re(self) -> f64 {
        self
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn recip(self) -> Self {
        1.0 / self
    }
    #[inline(always)]
    fn fma<const FUSED: bool>(self, a: f64, b: f64) -> f64 {
        if FUSED {
            self.mul_add(a, b)
        } else {
            self * a + b
        }
    }
    #[inline(always)]
    fn fma_c<const FUSED: bool>(self, a: f64, b: f64) -> f64 {
        self.fma::<FUSED>(a, b)
    }
}

/// `re + eps * du` with `eps^2 = 0`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dual {
    /// Value.
    pub re: f64,
    /// Directional derivative.
    pub du: f64,
}

impl Dual {
    /// A value with its derivative.
    pub fn new(re: f64, du: f64) -> Self {
        Dual { re, du }
    }
}

impl Add for Dual {
    type Output = Dual;
    #[inline(always)]
    fn add(self, o: Dual) -> Dual {
        Dual { re: self.re + o.re, du: self.du + o.du }
    }
}
impl Sub for Dual {
    type Output = Dual;
    #[inline(always)]
    fn sub(self, o: Dual) -> Dual {
        Dual { re: self.re - o.re, du: self.du - o.du }
    }
}
impl Mul for Dual {
    type Output = Dual;
    #[inline(always)]
    fn mul(self, o: Dual) -> Dual {
        Dual { re: self.re * o.re, du: self.re * o.du + self.du * o.re }
    }
}
impl Mul<f64> for Dual {
    type Output = Dual;
    #[inline(always)]
    fn mul(self, o: f64) -> Dual {
        Dual { re: self.re * o, du: self.du * o }
    }
}
impl Neg for Dual {
    type Output = Dual;
    #[inline(always)]
    fn neg(self) -> Dual {
        Dual { re: -self.re, du: -self.du }
    }
}
impl AddAssign for Dual {
    #[inline(always)]
    fn add_assign(&mut self, o: Dual) {
        self.re += o.re;
        self.du += o.du;
    }
}
impl SubAssign for Dual {
    #[inline(always)]
    fn sub_assign(&mut self, o: Dual) {
        self.re -= o.re;
        self.du -= o.du;
    }
}
impl MulAssign<f64> for Dual {
    #[inline(always)]
    fn mul_assign(&mut self, o: f64) {
        self.re *= o;
        self.du *= o;
    }
}

impl Num for Dual {
    #[inline(always)]
    fn cst(x: f64) -> Self {
        Dual { re: x, du: 0.0 }
    }
    #[inline(always)]
    fn re(self) -> f64 {
        self.re
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        let s = self.re.sqrt();
        Dual { re: s, du: self.du / (2.0 * s) }
    }
    #[inline(always)]
    fn recip(self) -> Self {
        let r = 1.0 / self.re;
        Dual { re: r, du: -self.du * r * r }
    }
    #[inline(always)]
    fn fma<const FUSED: bool>(self, a: Dual, b: Dual) -> Dual {
        Dual {
            re: self.re.fma::<FUSED>(a.re, b.re),
            du: self.re.fma::<FUSED>(a.du, self.du.fma::<FUSED>(a.re, b.du)),
        }
    }
    #[inline(always)]
    fn fma_c<const FUSED: bool>(self, a: f64, b: Dual) -> Dual {
        Dual { re: self.re.fma::<FUSED>(a, b.re), du: self.du.fma::<FUSED>(a, b.du) }
    }
}
