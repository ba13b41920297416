//! A trained head: multinomial logistic regression (softmax) over the embeddings of labelled items.
//!
//! The vote and the prototypes only measure distances in the embedding space as the model made it. A
//! linear head learns which directions of that space separate the catalogue's categories (a coat from
//! a pullover differs in a few of CLIP's 512 dimensions, drowned out in a cosine). It needs enough
//! labels to learn from, so [`crate::decide`] lets it take over from the vote as labels grow.
//!
//! Features are whitened first: centred on the labelled items' mean and multiplied by `L⁻¹`, where
//! `L Lᵀ` is their covariance shrunk towards a multiple of the identity (`shrinkage` times the mean
//! variance added on the diagonal). CLIP's dimensions are strongly correlated; whitening lets the
//! penalty treat every direction of variation alike, which on Fashion-MNIST's development split gave
//! +0.01 top-1 over per-dimension standardisation (README, Quality). The shrinkage keeps the transform
//! defined with fewer labels than dimensions.
//!
//! Training is full-batch L-BFGS on the mean cross-entropy plus an L2 penalty on the weights (bias
//! unpenalised): a convex problem, so the answer depends on the data and the settings, not on a seed.
//! The stored weights are folded back through the whitening, so a prediction is one matrix-vector
//! product on the centred embedding.

use serde::{Deserialize, Serialize};

use crate::lbfgs;

/// What a head reads from an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reads {
    /// The search embedding (heads stored before features existed, and models without a token
    /// output).
    #[default]
    Embedding,
    /// The model's pooled tokens (`model.features_output`).
    Features,
}

impl Reads {
    /// What a head trained on these examples' `features` reads: the features when every example has
    /// them, all of one length; otherwise (a catalogue partly stored before features were kept, a
    /// model without a token output) the embedding.
    pub fn for_examples<'a>(mut features: impl Iterator<Item = Option<&'a [f32]>>) -> Reads {
        let Some(Some(first)) = features.next() else {
            return Reads::Embedding;
        };
        let len = first.len();
        if len > 0 && features.all(|f| f.is_some_and(|f| f.len() == len)) {
            Reads::Features
        } else {
            Reads::Embedding
        }
    }

    /// The vector of an image this head reads.
    pub fn pick<'a>(self, embedding: &'a [f32], features: Option<&'a [f32]>) -> Option<&'a [f32]> {
        match self {
            Reads::Embedding => Some(embedding),
            Reads::Features => features,
        }
    }
}

/// A trained head, as stored (Postgres) and loaded by every process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Which vector of an image it was trained on, and so must be given.
    #[serde(default)]
    pub reads: Reads,
    /// The categories it knows, in the order of its weight rows.
    pub categories: Vec<String>,
    /// Scores are `weights · (x - mean) + bias`.
    pub mean: Vec<f32>,
    /// `categories.len() × dim`, row-major (whitening folded in).
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// Softmax temperature fitted on held-out labels (1 when there were too few to hold any out).
    pub temperature: f32,
}

/// How a head is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSettings {
    /// L2 penalty on the weights (on whitened features).
    pub l2: f64,
    /// Covariance shrinkage: this many times the mean variance is added to the diagonal.
    pub shrinkage: f64,
    /// L-BFGS iterations at most.
    pub max_iterations: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            l2: 0.03,
            shrinkage: 1.0,
            max_iterations: 300,
        }
    }
}

/// One labelled example.
pub type Example<'a> = (&'a [f32], &'a str);

/// What a training run did.
#[derive(Debug, Clone)]
pub struct Trained {
    pub head: Head,
    /// L-BFGS iterations used.
    pub iterations: usize,
    /// Final objective (mean cross-entropy + penalty).
    pub loss: f64,
}

/// Trains a head on `examples`. `None` with fewer than two categories (nothing to separate) or
/// vectors of different lengths.
pub fn train(examples: &[Example], settings: &TrainSettings) -> Option<Trained> {
    let dim = examples.first()?.0.len();
    if dim == 0 || examples.iter().any(|(x, _)| x.len() != dim) {
        return None;
    }
    let mut categories: Vec<String> = examples.iter().map(|(_, c)| c.to_string()).collect();
    categories.sort();
    categories.dedup();
    if categories.len() < 2 {
        return None;
    }
    let k = categories.len();
    let targets: Vec<usize> = examples
        .iter()
        .map(|(_, c)| categories.binary_search_by(|x| x.as_str().cmp(c)).unwrap())
        .collect();

    let whitening = Whitening::fit(examples, settings.shrinkage);
    let features: Vec<f32> = examples
        .iter()
        .flat_map(|(x, _)| whitening.apply(x))
        .collect();

    let problem = Problem {
        features: &features,
        targets: &targets,
        dim,
        classes: k,
        l2: settings.l2,
    };
    let start = vec![0f64; k * (dim + 1)];
    let result = lbfgs::minimise(start, settings.max_iterations, |p, g| {
        problem.evaluate(p, g)
    });
    let (weights, bias) = result.point.split_at(k * dim);
    Some(Trained {
        head: Head {
            reads: Reads::Embedding,
            categories,
            mean: whitening.mean.iter().map(|m| *m as f32).collect(),
            weights: weights
                .chunks_exact(dim)
                .flat_map(|w| whitening.fold(w))
                .map(|w| w as f32)
                .collect(),
            bias: bias.iter().map(|b| *b as f32).collect(),
            temperature: 1.0,
        },
        iterations: result.iterations,
        loss: result.value,
    })
}

/// A head trained the way the service trains it: see [`fit`].
#[derive(Debug, Clone)]
pub struct Fitted {
    pub head: Head,
    /// Examples held out to measure the head and fit its temperature (0 when too few).
    pub held_out: usize,
    /// Top-1 accuracy on them, of a head trained without them.
    pub held_out_accuracy: Option<f32>,
    /// L-BFGS iterations of the final training.
    pub iterations: usize,
}

/// A labelled image as training sees it: both vectors the head could read.
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    pub embedding: &'a [f32],
    pub features: Option<&'a [f32]>,
    pub category: &'a str,
}

/// [`fit`] on the vector every labelled image has ([`Reads::for_examples`]): the features when all
/// have them, else the embedding. The head records which, so predictions are given the same.
pub fn fit_labelled(labelled: &[Labelled], settings: &TrainSettings) -> Option<Fitted> {
    let reads = Reads::for_examples(labelled.iter().map(|l| l.features));
    let examples: Vec<Example> = labelled
        .iter()
        .filter_map(|l| Some((reads.pick(l.embedding, l.features)?, l.category)))
        .collect();
    let mut fitted = fit(&examples, settings)?;
    fitted.head.reads = reads;
    Some(fitted)
}

/// Below this many examples nothing is held out: the temperature stays 1.
const MIN_FOR_HELD_OUT: usize = 20;
/// Examples of a category are dealt into this many folds (the first to fold 0, the second to fold 1…).
const FOLDS: usize = 5;
/// Up to this many examples every fold is held out in turn, so every example calibrates the
/// temperature once; above it one fold (a fifth) is plenty for one parameter and training stays at two
/// rounds. The small catalogue is where the temperature matters most: Vendure's 43 labels per training
/// fold left 6 held-out images to fit it on with one fold, and 43 with all five.
const CROSS_FIT_UP_TO: usize = 2_000;

/// Trains a head the way the service does. First it measures the head on examples it did not see and
/// fits its temperature on them: categories with at least [`FOLDS`] examples are dealt into folds, a
/// head is trained without each fold and predicts it (every fold up to [`CROSS_FIT_UP_TO`] examples,
/// only the last one above that); categories with fewer examples always train. Then it trains on
/// everything and keeps that temperature.
pub fn fit(examples: &[Example], settings: &TrainSettings) -> Option<Fitted> {
    let folds = folds(examples);
    let rounds: Vec<usize> = if examples.len() < MIN_FOR_HELD_OUT {
        Vec::new()
    } else if examples.len() <= CROSS_FIT_UP_TO {
        (0..FOLDS).collect()
    } else {
        vec![FOLDS - 1]
    };
    let mut cases: Vec<(Vec<f32>, usize)> = Vec::new();
    let mut right = 0usize;
    for round in rounds {
        let (mut first, mut held) = (Vec::new(), Vec::new());
        for (e, fold) in examples.iter().zip(&folds) {
            if *fold == Some(round) {
                held.push(*e);
            } else {
                first.push(*e);
            }
        }
        if held.is_empty() {
            continue;
        }
        let Some(t) = train(&first, settings) else {
            continue;
        };
        for (x, c) in held {
            let Some(i) = t.head.categories.iter().position(|k| k == c) else {
                continue;
            };
            let z = t.head.logits(x);
            if argmax(&z) == Some(i) {
                right += 1;
            }
            cases.push((z, i));
        }
    }
    let temperature = fit_temperature(&cases).unwrap_or(1.0);
    let held_out_accuracy = (!cases.is_empty()).then(|| right as f32 / cases.len() as f32);
    let mut trained = train(examples, settings)?;
    trained.head.temperature = temperature;
    Some(Fitted {
        head: trained.head,
        held_out: cases.len(),
        held_out_accuracy,
        iterations: trained.iterations,
    })
}

/// Each example's fold: the n-th example of a category (in the order given) goes to fold n mod
/// [`FOLDS`]; `None` for categories too small to lose any.
fn folds(examples: &[Example]) -> Vec<Option<usize>> {
    let mut counts: std::collections::HashMap<&str, usize> = Default::default();
    for (_, c) in examples {
        *counts.entry(c).or_default() += 1;
    }
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    examples
        .iter()
        .map(|(_, c)| {
            let n = seen.entry(c).or_default();
            *n += 1;
            (counts[c] >= FOLDS).then_some((*n - 1) % FOLDS)
        })
        .collect()
}

fn argmax(z: &[f32]) -> Option<usize> {
    z.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// The softmax temperature that minimises the cross-entropy of `cases` (raw scores, right index).
/// `None` without cases.
fn fit_temperature(cases: &[(Vec<f32>, usize)]) -> Option<f32> {
    if cases.is_empty() {
        return None;
    }
    let nll = |t: f32| -> f64 {
        cases
            .iter()
            .map(|(z, i)| -(softmax(z, t)[*i].max(1e-12) as f64).ln())
            .sum()
    };
    // A log-spaced grid from 1/8 to 8: the loss is smooth in log t, and a grid cannot diverge.
    (-60..=60)
        .map(|i| 2f32.powf(i as f32 / 20.0))
        .map(|t| (t, nll(t)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(t, _)| t)
}

impl Head {
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Raw scores per category (before the temperature), in the order of `categories`.
    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        let x: Vec<f32> = embedding
            .iter()
            .zip(&self.mean)
            .map(|(v, m)| v - m)
            .collect();
        self.weights
            .chunks_exact(self.dim())
            .zip(&self.bias)
            .map(|(w, b)| b + dot(w, &x))
            .collect()
    }

    /// Probability per category, best first. Empty when the embedding's length is not the head's.
    pub fn predict(&self, embedding: &[f32]) -> Vec<(String, f32)> {
        if embedding.len() != self.dim() {
            return Vec::new();
        }
        let p = softmax(&self.logits(embedding), self.temperature);
        let mut ranked: Vec<(String, f32)> = self.categories.iter().cloned().zip(p).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked
    }
}

/// `z = L⁻¹ (x - mean)` with `L Lᵀ` the shrunk covariance of the training embeddings.
struct Whitening {
    mean: Vec<f64>,
    /// Lower-triangular Cholesky factor, row-major `dim × dim`.
    lower: Vec<f64>,
    dim: usize,
}

impl Whitening {
    fn fit(examples: &[Example], shrinkage: f64) -> Self {
        let (n, dim) = (examples.len() as f64, examples[0].0.len());
        let mut mean = vec![0f64; dim];
        for (x, _) in examples {
            mean.iter_mut().zip(*x).for_each(|(m, v)| *m += *v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= n);
        // Covariance, lower triangle (row i, columns 0..=i).
        let mut cov = vec![0f64; dim * dim];
        let mut centred = vec![0f64; dim];
        for (x, _) in examples {
            centred
                .iter_mut()
                .zip(*x)
                .zip(&mean)
                .for_each(|((c, v), m)| *c = *v as f64 - m);
            for i in 0..dim {
                let ci = centred[i];
                let row = &mut cov[i * dim..i * dim + i + 1];
                row.iter_mut()
                    .zip(&centred[..=i])
                    .for_each(|(r, cj)| *r += ci * cj);
            }
        }
        cov.iter_mut().for_each(|c| *c /= n);
        let trace: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
        // A floor keeps the factor defined even for identical examples (zero variance).
        let ridge = (shrinkage * trace / dim as f64).max(1e-9);
        (0..dim).for_each(|i| cov[i * dim + i] += ridge);
        let mut lower = vec![0f64; dim * dim];
        for i in 0..dim {
            for j in 0..=i {
                let s: f64 = (0..j)
                    .map(|k| lower[i * dim + k] * lower[j * dim + k])
                    .sum();
                lower[i * dim + j] = if i == j {
                    (cov[i * dim + i] - s).max(1e-12).sqrt()
                } else {
                    (cov[i * dim + j] - s) / lower[j * dim + j]
                };
            }
        }
        Whitening { mean, lower, dim }
    }

    /// Forward substitution: solves `L z = x - mean`.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let d = self.dim;
        let mut z = vec![0f64; d];
        for i in 0..d {
            let row = &self.lower[i * d..i * d + i];
            let s: f64 = row.iter().zip(&z[..i]).map(|(l, z)| l * z).sum();
            z[i] = (x[i] as f64 - self.mean[i] - s) / self.lower[i * d + i];
        }
        z.into_iter().map(|v| v as f32).collect()
    }

    /// Weights on whitened features as weights on centred embeddings: back substitution, `v = L⁻ᵀ w`
    /// (then `w · z = v · (x - mean)`).
    fn fold(&self, w: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let mut v = vec![0f64; d];
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|k| self.lower[k * d + i] * v[k]).sum();
            v[i] = (w[i] - s) / self.lower[i * d + i];
        }
        v
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn softmax(z: &[f32], temperature: f32) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = z.iter().map(|v| ((v - max) / temperature).exp()).collect();
    let total: f32 = e.iter().sum();
    e.into_iter().map(|v| v / total).collect()
}

/// The training objective over standardised features.
struct Problem<'a> {
    features: &'a [f32],
    targets: &'a [usize],
    dim: usize,
    classes: usize,
    l2: f64,
}

impl Problem<'_> {
    /// Objective at `params` (weights row-major, then biases); writes the gradient into `grad`.
    fn evaluate(&self, params: &[f64], grad: &mut [f64]) -> f64 {
        let (d, k) = (self.dim, self.classes);
        let n = self.targets.len();
        // The inner products run in f32 (the hot loop, vectorised); sums are kept in f64.
        let w: Vec<f32> = params[..k * d].iter().map(|v| *v as f32).collect();
        let b = &params[k * d..];
        let mut gw = vec![0f32; k * d];
        let mut gb = vec![0f64; k];
        let mut loss = 0f64;
        let mut p = vec![0f64; k];
        for (x, &t) in self.features.chunks_exact(d).zip(self.targets) {
            for (c, pc) in p.iter_mut().enumerate() {
                *pc = b[c] + dot(&w[c * d..(c + 1) * d], x) as f64;
            }
            let max = p.iter().copied().fold(f64::MIN, f64::max);
            let mut total = 0.0;
            for pc in p.iter_mut() {
                *pc = (*pc - max).exp();
                total += *pc;
            }
            loss += total.ln() - (p[t].ln());
            for (c, pc) in p.iter_mut().enumerate() {
                *pc /= total;
                let r = *pc - if c == t { 1.0 } else { 0.0 };
                gb[c] += r;
                let r = r as f32;
                for (g, v) in gw[c * d..(c + 1) * d].iter_mut().zip(x) {
                    *g += r * v;
                }
            }
        }
        let inv = 1.0 / n as f64;
        let mut penalty = 0.0;
        for (i, g) in grad[..k * d].iter_mut().enumerate() {
            *g = gw[i] as f64 * inv + self.l2 * params[i];
            penalty += params[i] * params[i];
        }
        for (c, g) in grad[k * d..].iter_mut().enumerate() {
            *g = gb[c] * inv;
        }
        loss * inv + 0.5 * self.l2 * penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters per category around fixed directions, a little noise (deterministic).
    fn blobs(per_category: usize) -> Vec<(Vec<f32>, String)> {
        let centres = [
            ("coat", [1.0, 0.2, 0.0, 0.1]),
            ("dress", [0.0, 1.0, 0.3, 0.0]),
            ("shoe", [0.2, 0.0, 1.0, 0.4]),
        ];
        let mut out = Vec::new();
        let mut seed = 7u32;
        let mut noise = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((seed >> 16) as f32 / 65_536.0 - 0.5) * 0.3
        };
        for (name, c) in centres {
            for _ in 0..per_category {
                out.push((c.iter().map(|v| v + noise()).collect(), name.to_string()));
            }
        }
        out
    }

    fn examples(data: &[(Vec<f32>, String)]) -> Vec<Example<'_>> {
        data.iter()
            .map(|(x, c)| (x.as_slice(), c.as_str()))
            .collect()
    }

    #[test]
    fn learns_separable_categories() {
        let data = blobs(20);
        let t = train(&examples(&data), &TrainSettings::default()).unwrap();
        assert_eq!(t.head.categories, ["coat", "dress", "shoe"]);
        for (x, c) in &data {
            assert_eq!(&t.head.predict(x)[0].0, c);
        }
        let p: f32 = t.head.predict(&data[0].0).iter().map(|(_, p)| p).sum();
        assert!((p - 1.0).abs() < 1e-5, "probabilities sum to 1: {p}");
    }

    #[test]
    fn the_optimum_does_not_depend_on_the_order_of_examples() {
        let data = blobs(10);
        let mut reversed = data.clone();
        reversed.reverse();
        let a = train(&examples(&data), &TrainSettings::default()).unwrap();
        let b = train(&examples(&reversed), &TrainSettings::default()).unwrap();
        for (x, _) in &data {
            let (pa, pb) = (a.head.predict(x), b.head.predict(x));
            assert_eq!(pa[0].0, pb[0].0);
            assert!((pa[0].1 - pb[0].1).abs() < 1e-3, "{pa:?} vs {pb:?}");
        }
    }

    #[test]
    fn fit_labelled_trains_on_the_features_when_all_have_them() {
        // The embeddings cannot separate the two categories; the features can.
        let same = [1.0f32, 0.0];
        let (coat, dress) = ([1.0f32, 0.0, 0.2], [0.0f32, 1.0, 0.2]);
        let labelled: Vec<Labelled> = (0..6)
            .map(|i| Labelled {
                embedding: &same,
                features: Some(if i % 2 == 0 { &coat[..] } else { &dress[..] }),
                category: if i % 2 == 0 { "coat" } else { "dress" },
            })
            .collect();
        let head = fit_labelled(&labelled, &TrainSettings::default())
            .unwrap()
            .head;
        assert_eq!(head.reads, Reads::Features);
        assert_eq!(head.predict(&dress)[0].0, "dress");
        // One image without features: the head falls back to the embeddings, for all.
        let mut partial = labelled.clone();
        partial[0].features = None;
        let head = fit_labelled(&partial, &TrainSettings::default())
            .unwrap()
            .head;
        assert_eq!((head.reads, head.mean.len()), (Reads::Embedding, 2));
    }

    #[test]
    fn a_head_reads_features_only_when_every_example_has_them() {
        let (a, b) = ([1.0f32, 2.0], [3.0f32]);
        assert_eq!(
            Reads::for_examples([Some(&a[..]), Some(&a[..])].into_iter()),
            Reads::Features
        );
        assert_eq!(
            Reads::for_examples([Some(&a[..]), None].into_iter()),
            Reads::Embedding
        );
        assert_eq!(
            Reads::for_examples([Some(&a[..]), Some(&b[..])].into_iter()),
            Reads::Embedding
        );
        assert_eq!(Reads::for_examples(std::iter::empty()), Reads::Embedding);
        // Heads stored before features existed read the embedding.
        let old: Head = serde_json::from_value(serde_json::json!({
            "categories": ["a"], "mean": [0.0], "weights": [1.0], "bias": [0.0], "temperature": 1.0
        }))
        .unwrap();
        assert_eq!(old.reads, Reads::Embedding);
    }

    #[test]
    fn a_stronger_penalty_gives_softer_probabilities() {
        let data = blobs(10);
        let soft = TrainSettings {
            l2: 10.0,
            ..Default::default()
        };
        let a = train(&examples(&data), &TrainSettings::default()).unwrap();
        let b = train(&examples(&data), &soft).unwrap();
        assert!(b.head.predict(&data[0].0)[0].1 < a.head.predict(&data[0].0)[0].1);
    }

    #[test]
    fn one_category_or_mixed_lengths_train_nothing() {
        let one = vec![(vec![1.0, 0.0], "coat".to_string()); 3];
        assert!(train(&examples(&one), &TrainSettings::default()).is_none());
        let a = [1.0f32, 0.0];
        let b = [1.0f32, 0.0, 0.0];
        assert!(train(&[(&a, "x"), (&b, "y")], &TrainSettings::default()).is_none());
        assert!(train(&[], &TrainSettings::default()).is_none());
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let data = blobs(3);
        let features: Vec<f32> = data.iter().flat_map(|(x, _)| x.clone()).collect();
        let targets: Vec<usize> = (0..9).map(|i| i / 3).collect();
        let problem = Problem {
            features: &features,
            targets: &targets,
            dim: 4,
            classes: 3,
            l2: 0.1,
        };
        let params: Vec<f64> = (0..15).map(|i| (i as f64 * 0.37).sin() * 0.5).collect();
        let mut grad = vec![0.0; 15];
        problem.evaluate(&params, &mut grad);
        let mut scratch = vec![0.0; 15];
        for i in 0..15 {
            let h = 1e-3;
            let mut up = params.clone();
            up[i] += h;
            let mut down = params.clone();
            down[i] -= h;
            let numeric = (problem.evaluate(&up, &mut scratch)
                - problem.evaluate(&down, &mut scratch))
                / (2.0 * h);
            assert!(
                (numeric - grad[i]).abs() < 1e-3,
                "param {i}: {numeric} vs {}",
                grad[i]
            );
        }
    }

    #[test]
    fn the_fitted_temperature_softens_an_overconfident_head() {
        // Labels that overlap: a head trained with almost no penalty is too sure of itself.
        let mut data = blobs(15);
        for i in (0..data.len()).step_by(4) {
            data[i].1 = "dress".into();
        }
        let (train_part, held): (Vec<_>, Vec<_>) =
            data.iter().enumerate().partition(|(i, _)| i % 3 != 0);
        let train_part: Vec<_> = train_part.into_iter().map(|(_, d)| d.clone()).collect();
        let held: Vec<_> = held.into_iter().map(|(_, d)| d.clone()).collect();
        let sharp = TrainSettings {
            l2: 1e-6,
            shrinkage: 0.01,
            ..Default::default()
        };
        let head = train(&examples(&train_part), &sharp).unwrap().head;
        let cases: Vec<(Vec<f32>, usize)> = held
            .iter()
            .map(|(x, c)| {
                (
                    head.logits(x),
                    head.categories.iter().position(|k| k == c).unwrap(),
                )
            })
            .collect();
        let temperature = fit_temperature(&cases).unwrap();
        assert!(temperature > 1.0, "{temperature}");
    }

    #[test]
    fn fit_measures_on_held_out_examples_and_keeps_them_for_the_final_head() {
        let data = blobs(10);
        let f = fit(&examples(&data), &TrainSettings::default()).unwrap();
        assert_eq!(f.held_out, 30, "a small set: every example held out once");
        assert_eq!(f.held_out_accuracy, Some(1.0));
        let large = blobs(700);
        let f = fit(&examples(&large), &TrainSettings::default()).unwrap();
        assert_eq!(f.held_out, 420, "a large set: every fifth of each category");
        // Categories with fewer than five examples always train; the others are held out in turn.
        let mut mixed = blobs(9);
        mixed.truncate(9 + 9 + 3);
        let f = fit(&examples(&mixed), &TrainSettings::default()).unwrap();
        assert_eq!(f.held_out, 18);
        let small = blobs(3);
        let f = fit(&examples(&small), &TrainSettings::default()).unwrap();
        assert_eq!(
            (f.held_out, f.held_out_accuracy, f.head.temperature),
            (0, None, 1.0)
        );
    }

    #[test]
    fn a_small_set_fits_its_temperature_on_every_example() {
        // Overlapping labels and almost no penalty: every round's head is too sure of itself, and all
        // 45 examples say so, not only the nine of one fold.
        let mut data = blobs(15);
        for i in (0..data.len()).step_by(4) {
            data[i].1 = "dress".into();
        }
        let sharp = TrainSettings {
            l2: 1e-6,
            shrinkage: 0.01,
            ..Default::default()
        };
        let f = fit(&examples(&data), &sharp).unwrap();
        assert_eq!(f.held_out, data.len());
        assert!(f.head.temperature > 1.0, "{}", f.head.temperature);
        assert!(f.held_out_accuracy.unwrap() < 1.0);
    }

    #[test]
    fn whitening_decorrelates_and_folding_gives_the_same_scores() {
        // Two correlated dimensions and a third.
        let data: Vec<(Vec<f32>, String)> = (0..50)
            .map(|i| {
                let t = (i as f32 * 0.7).sin();
                let u = (i as f32 * 1.3).cos();
                (
                    vec![t, 0.9 * t + 0.3 * (i as f32 * 2.1).sin(), u],
                    if i % 2 == 0 { "a" } else { "b" }.to_string(),
                )
            })
            .collect();
        let ex = examples(&data);
        let w = Whitening::fit(&ex, 1e-6);
        let z: Vec<Vec<f32>> = data.iter().map(|(x, _)| w.apply(x)).collect();
        for i in 0..3 {
            for j in 0..3 {
                let c: f32 = z.iter().map(|v| v[i] * v[j]).sum::<f32>() / z.len() as f32;
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 1e-2, "cov[{i}][{j}] = {c}");
            }
        }
        let weights = [0.3, -1.2, 0.5];
        let folded = w.fold(&weights);
        for (x, _) in &data {
            let zx = w.apply(x);
            let direct: f64 = weights.iter().zip(&zx).map(|(a, b)| a * *b as f64).sum();
            let via: f64 = folded
                .iter()
                .zip(x)
                .zip(&w.mean)
                .map(|((v, x), m)| v * (*x as f64 - m))
                .sum();
            assert!((direct - via).abs() < 1e-4, "{direct} vs {via}");
        }
    }

    #[test]
    fn a_head_survives_a_round_trip_through_json() {
        let data = blobs(5);
        let head = train(&examples(&data), &TrainSettings::default())
            .unwrap()
            .head;
        let back: Head = serde_json::from_str(&serde_json::to_string(&head).unwrap()).unwrap();
        assert_eq!(back, head);
    }
}
