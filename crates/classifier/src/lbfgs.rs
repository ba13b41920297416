//! Limited-memory BFGS for smooth convex objectives (Nocedal & Wright, algorithms 7.4 and 7.5), with a
//! backtracking line search. Small on purpose: the head's objective is smooth and convex, so none of
//! the safeguards a general optimiser needs for non-convex problems apply.

use std::collections::VecDeque;

/// Pairs of (step, gradient change) remembered.
const MEMORY: usize = 10;
/// Stop when the largest gradient component is this small.
const GRADIENT_TOLERANCE: f64 = 1e-6;
/// ... or when an iteration lowers the objective by less than this, relative to its size.
const VALUE_TOLERANCE: f64 = 1e-10;

pub struct Minimum {
    pub point: Vec<f64>,
    pub value: f64,
    pub iterations: usize,
}

/// Minimises `f` from `start`; `f(x, grad)` returns the value at `x` and writes its gradient.
pub fn minimise(
    start: Vec<f64>,
    max_iterations: usize,
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
) -> Minimum {
    let n = start.len();
    let mut x = start;
    let mut g = vec![0.0; n];
    let mut value = f(&x, &mut g);
    let mut history: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(MEMORY);
    let mut next = vec![0.0; n];
    let mut next_g = vec![0.0; n];
    let mut iterations = 0;
    while iterations < max_iterations {
        if max_abs(&g) < GRADIENT_TOLERANCE {
            break;
        }
        iterations += 1;
        let mut direction = two_loop(&g, &history);
        let mut slope = dot(&direction, &g);
        if slope >= 0.0 {
            // Not a descent direction (rounding): restart from steepest descent.
            history.clear();
            direction = g.iter().map(|v| -v).collect();
            slope = -dot(&g, &g);
        }
        // The first step has no curvature to go by: scale it to a unit move.
        let mut step = if history.is_empty() {
            1.0 / norm(&g).max(1e-12)
        } else {
            1.0
        };
        let mut next_value;
        loop {
            for i in 0..n {
                next[i] = x[i] + step * direction[i];
            }
            next_value = f(&next, &mut next_g);
            if next_value <= value + 1e-4 * step * slope || step < 1e-20 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let improvement = value - next_value;
        std::mem::swap(&mut x, &mut next);
        std::mem::swap(&mut g, &mut next_g);
        value = next_value;
        if sy > 1e-12 {
            if history.len() == MEMORY {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / sy));
        }
        if improvement.abs() <= VALUE_TOLERANCE * value.abs().max(1.0) {
            break;
        }
    }
    Minimum {
        point: x,
        value,
        iterations,
    }
}

/// The quasi-Newton direction `-H g` from the remembered pairs.
fn two_loop(g: &[f64], history: &VecDeque<(Vec<f64>, Vec<f64>, f64)>) -> Vec<f64> {
    let mut q = g.to_vec();
    let mut alphas = Vec::with_capacity(history.len());
    for (s, y, rho) in history.iter().rev() {
        let a = rho * dot(s, &q);
        q.iter_mut().zip(y).for_each(|(q, y)| *q -= a * y);
        alphas.push(a);
    }
    if let Some((s, y, _)) = history.back() {
        let gamma = dot(s, y) / dot(y, y).max(1e-300);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
        let b = rho * dot(y, &q);
        q.iter_mut().zip(s).for_each(|(q, s)| *q += (a - b) * s);
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_a_badly_scaled_quadratic() {
        // f = sum c_i (x_i - i)^2 with curvatures 1..1000.
        let m = minimise(vec![0.0; 5], 200, |x, g| {
            let mut v = 0.0;
            for i in 0..5 {
                let c = 10f64.powi(i as i32 * 3 / 4);
                v += c * (x[i] - i as f64).powi(2);
                g[i] = 2.0 * c * (x[i] - i as f64);
            }
            v
        });
        for (i, x) in m.point.iter().enumerate() {
            assert!((x - i as f64).abs() < 1e-5, "{:?}", m.point);
        }
    }

    #[test]
    fn finds_the_minimum_of_the_rosenbrock_valley() {
        let m = minimise(vec![-1.2, 1.0], 500, |x, g| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        });
        assert!(
            (m.point[0] - 1.0).abs() < 1e-3 && (m.point[1] - 1.0).abs() < 1e-3,
            "{:?}",
            m.point
        );
    }
}
