//! Nelder–Mead in a box: the optimiser statsforecast fits its models with (adaptive
//! coefficients, the simplex clamped to the bounds, stopping when the spread of the vertices'
//! values is small), small enough to keep in the crate rather than pull a numeric library in.

/// Settings of one minimisation.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Most iterations.
    pub max_iter: usize,
    /// Stop when the population standard deviation of the vertices' values is below this.
    pub tol: f64,
    /// Initial simplex: each coordinate moved by this fraction of itself.
    pub step: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { max_iter: 1000, tol: 1e-4, step: 0.05 }
    }
}

impl Settings {
    /// The defaults, with a first simplex of 1 % instead of 5 % when the search starts warm —
    /// from the optimum of a shorter stretch of the same series, which it stays close to.
    pub fn starting(warm: bool) -> Self {
        let defaults = Self::default();
        Self { step: if warm { 0.01 } else { defaults.step }, ..defaults }
    }
}

/// The best point found and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    /// Where.
    pub x: Vec<f64>,
    /// The objective there.
    pub value: f64,
    /// Iterations run.
    pub iterations: usize,
}

fn clamp(x: &mut [f64], lower: &[f64], upper: &[f64]) {
    for ((v, lo), hi) in x.iter_mut().zip(lower).zip(upper) {
        *v = v.clamp(*lo, *hi);
    }
}

/// Minimises `f` from `x0` within `[lower, upper]` (NaN values count as +∞).
pub fn minimize(
    mut f: impl FnMut(&[f64]) -> f64,
    x0: &[f64],
    lower: &[f64],
    upper: &[f64],
    settings: Settings,
) -> Minimum {
    let d = x0.len();
    let eval = |f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64]| {
        let v = f(x);
        if v.is_nan() { f64::INFINITY } else { v }
    };
    if d == 0 {
        let value = eval(&mut f, x0);
        return Minimum { x: Vec::new(), value, iterations: 0 };
    }
    let dn = d as f64;
    let (alpha, gamma, rho, sigma) = (1.0, 1.0 + 2.0 / dn, 0.75 - 1.0 / (2.0 * dn), 1.0 - 1.0 / dn);
    let mut simplex: Vec<Vec<f64>> = Vec::with_capacity(d + 1);
    let mut start = x0.to_vec();
    clamp(&mut start, lower, upper);
    simplex.push(start.clone());
    for i in 0..d {
        let mut v = start.clone();
        v[i] = if v[i] == 0.0 { 1e-4 } else { v[i] * (1.0 + settings.step) };
        clamp(&mut v, lower, upper);
        if v[i] == start[i] {
            // Clamped back onto the start (it sits on its upper bound — a warm start from a
            // fit that ended there): step the other way, or the simplex would lose this
            // dimension and the search could never move it again.
            v[i] = if start[i] == 0.0 { -1e-4 } else { start[i] * (1.0 - settings.step) };
            clamp(&mut v, lower, upper);
        }
        simplex.push(v);
    }
    let mut values: Vec<f64> = simplex.iter().map(|x| eval(&mut f, x)).collect();
    let mut order: Vec<usize> = (0..=d).collect();
    let mut iterations = 0;
    let mut centroid = vec![0.0; d];
    let mut trial = vec![0.0; d];
    let mut trial2 = vec![0.0; d];
    while iterations < settings.max_iter {
        iterations += 1;
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let (best, worst, second) = (order[0], order[d], order[d - 1]);
        let mean = values.iter().filter(|v| v.is_finite()).sum::<f64>() / (d + 1) as f64;
        let spread = if values.iter().all(|v| v.is_finite()) {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (d + 1) as f64).sqrt()
        } else {
            f64::INFINITY
        };
        if spread < settings.tol {
            break;
        }
        centroid.iter_mut().for_each(|c| *c = 0.0);
        for &i in &order[..d] {
            for (c, v) in centroid.iter_mut().zip(&simplex[i]) {
                *c += v / dn;
            }
        }
        let toward = |out: &mut Vec<f64>, from: &[f64], k: f64| {
            for ((o, c), w) in out.iter_mut().zip(&centroid).zip(from) {
                *o = c + k * (c - w);
            }
            clamp(out, lower, upper);
        };
        toward(&mut trial, &simplex[worst], alpha);
        let fr = eval(&mut f, &trial);
        if values[best] <= fr && fr < values[second] {
            simplex[worst].copy_from_slice(&trial);
            values[worst] = fr;
        } else if fr < values[best] {
            // Expand past the reflection.
            for ((o, c), r) in trial2.iter_mut().zip(&centroid).zip(&trial) {
                *o = c + gamma * (r - c);
            }
            clamp(&mut trial2, lower, upper);
            let fe = eval(&mut f, &trial2);
            if fe < fr {
                simplex[worst].copy_from_slice(&trial2);
                values[worst] = fe;
            } else {
                simplex[worst].copy_from_slice(&trial);
                values[worst] = fr;
            }
        } else {
            let outside = fr < values[worst];
            for ((o, c), r) in trial2.iter_mut().zip(&centroid).zip(&trial) {
                *o = if outside { c + rho * (r - c) } else { c - rho * (r - c) };
            }
            clamp(&mut trial2, lower, upper);
            let fc = eval(&mut f, &trial2);
            if (outside && fc <= fr) || (!outside && fc < values[worst]) {
                simplex[worst].copy_from_slice(&trial2);
                values[worst] = fc;
            } else {
                let anchor = simplex[best].clone();
                for &i in &order[1..] {
                    for (v, b) in simplex[i].iter_mut().zip(&anchor) {
                        *v = b + sigma * (*v - b);
                    }
                    clamp(&mut simplex[i], lower, upper);
                    values[i] = eval(&mut f, &simplex[i]);
                }
            }
        }
    }
    let best = (0..=d).min_by(|&a, &b| values[a].total_cmp(&values[b])).unwrap_or(0);
    Minimum { x: simplex[best].clone(), value: values[best], iterations }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_a_bowl_and_respects_the_box() {
        let bowl = |x: &[f64]| (x[0] - 0.3).powi(2) + 2.0 * (x[1] + 0.7).powi(2);
        let settings = Settings { tol: 1e-12, ..Settings::default() };
        let m = minimize(bowl, &[0.9, 0.9], &[-5.0, -5.0], &[5.0, 5.0], settings);
        assert!((m.x[0] - 0.3).abs() < 1e-4 && (m.x[1] + 0.7).abs() < 1e-4, "{m:?}");
        // The same bowl with the minimum outside the box: the answer is on the boundary.
        let m = minimize(bowl, &[0.9, 0.9], &[0.5, 0.0], &[5.0, 5.0], settings);
        assert!((m.x[0] - 0.5).abs() < 1e-4 && m.x[1].abs() < 1e-4, "{m:?}");
    }

    #[test]
    fn a_start_on_the_upper_bound_can_still_move_away_from_it() {
        // The minimum is at 0.5; the search starts on the bound 0.98 (a warm start from a fit
        // that ended there) with a small first step.
        let f = |x: &[f64]| (x[0] - 0.5).powi(2) + (x[1] - 0.2).powi(2);
        let settings = Settings { tol: 1e-12, step: 0.01, ..Settings::default() };
        let m = minimize(f, &[0.98, 0.3], &[0.8, 0.0], &[0.98, 1.0], settings);
        assert!((m.x[0] - 0.8).abs() < 1e-6 && (m.x[1] - 0.2).abs() < 1e-4, "{m:?}");
    }

    #[test]
    fn rosenbrock_converges_from_its_classic_start() {
        let rosen = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let settings = Settings { tol: 1e-14, max_iter: 5000, ..Settings::default() };
        let m = minimize(rosen, &[-1.2, 1.0], &[-10.0, -10.0], &[10.0, 10.0], settings);
        assert!((m.x[0] - 1.0).abs() < 1e-3 && (m.x[1] - 1.0).abs() < 1e-3, "{m:?}");
    }
}
