//! k-fold cross-validation in process, over the vectors the service made, through the classifier code
//! the service runs (`lookalike_classifier::decide` and `fit`).
//!
//! Each image is tested once, by a classifier that learnt from the other folds only. Folds are grouped
//! (all views of one product fall in the same fold, so no sibling view is in training while its twin
//! is tested) and spread evenly over each category.

use std::collections::{BTreeMap, HashMap};

use lookalike_classifier::{
    Evidence, Head, HeadInput, Labelled, Prediction, Settings, TrainSettings, categories_to_search,
    decide,
};

/// Everything the folds need to know about the labelled images.
pub struct Data<'a> {
    /// Unit-length embeddings.
    pub vectors: &'a [Vec<f32>],
    /// Every image's pooled tokens, when the service keeps them: the head then learns from them, as
    /// the service's does ([`lookalike_classifier::fit_labelled`]).
    pub features: Option<&'a [Vec<f32>]>,
    pub labels: &'a [&'a str],
    /// Item ids: training examples are taken in this order, as the service takes them (`ORDER BY id`).
    pub ids: &'a [String],
    /// Fold of each image ([`assign_folds`]).
    pub folds: &'a [usize],
    pub k: usize,
}

impl Data<'_> {
    fn features_of(&self, image: usize) -> Option<&[f32]> {
        self.features.map(|f| f[image].as_slice())
    }
}

/// The classifier's settings as the service reports them (`/v1/status`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classifier {
    pub neighbours: usize,
    pub decision: Settings,
    pub head: bool,
    pub l2: f64,
    pub shrinkage: f64,
    pub min_labels: usize,
    pub min_confidence: f32,
    pub cover: f32,
    pub max_categories: usize,
}

impl Classifier {
    /// From `/v1/status` → `classifier.settings`.
    pub fn from_status(s: &lookalike_api_types::ClassifySettings) -> Self {
        Classifier {
            neighbours: s.neighbours,
            decision: Settings {
                neighbour_temperature: s.neighbour_temperature,
                prototype_temperature: s.prototype_temperature,
                prototype_weight: s.prototype_weight,
                confidence_temperature: s.confidence_temperature,
                head_takeover: s.head_takeover,
            },
            head: s.head,
            l2: s.head_l2,
            shrinkage: s.head_shrinkage,
            min_labels: s.head_min_labels as usize,
            min_confidence: s.min_confidence,
            cover: s.cover,
            max_categories: s.max_categories,
        }
    }

    /// The settings as `classify.*` names them.
    /// The settings a service with this configuration classifies with (what its `/v1/status` says).
    pub fn from_config(c: &lookalike_core::config::Classify) -> Self {
        Classifier {
            neighbours: c.neighbours,
            decision: Settings {
                neighbour_temperature: c.neighbour_temperature,
                prototype_temperature: c.prototype_temperature,
                prototype_weight: c.prototype_weight,
                confidence_temperature: c.confidence_temperature,
                head_takeover: c.head_takeover,
            },
            head: c.head,
            l2: c.head_l2,
            shrinkage: c.head_shrinkage,
            min_labels: c.head_min_labels as usize,
            min_confidence: c.min_confidence,
            cover: c.cover,
            max_categories: c.max_categories,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let d = &self.decision;
        serde_json::json!({
            "neighbours": self.neighbours,
            "neighbour_temperature": d.neighbour_temperature,
            "prototype_temperature": d.prototype_temperature,
            "prototype_weight": d.prototype_weight,
            "confidence_temperature": d.confidence_temperature,
            "head": self.head,
            "head_l2": self.l2,
            "head_shrinkage": self.shrinkage,
            "head_takeover": d.head_takeover,
            "head_min_labels": self.min_labels,
        })
    }
}

/// Puts each group (a product, or a single image) in one of `k` folds: groups are dealt out category
/// by category in a fixed pseudo-random order, so every fold gets its share of every category.
pub fn assign_folds(labels: &[&str], groups: &[&str], k: usize) -> Vec<usize> {
    let mut by_category: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut group_label: HashMap<&str, &str> = HashMap::new();
    for (l, g) in labels.iter().zip(groups) {
        if group_label.insert(g, l).is_none() {
            by_category.entry(l).or_default().push(g);
        }
    }
    let mut fold_of: HashMap<&str, usize> = HashMap::new();
    let mut next = 0;
    for groups in by_category.values_mut() {
        groups.sort_by_key(|g| (fnv(g), *g));
        for g in groups.iter() {
            fold_of.insert(g, next % k);
            next += 1;
        }
    }
    groups.iter().map(|g| fold_of[g]).collect()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// One fold's test images, its training images (in id order) and their similarities.
pub struct Fold {
    pub test: Vec<usize>,
    pub train: Vec<usize>,
    /// `sims[t][j]`: cosine of test image `test[t]` with training image `train[j]`.
    sims: Vec<Vec<f32>>,
}

/// Splits the data into its folds and computes each test image's similarity to each training image.
pub fn prepare(d: &Data) -> Vec<Fold> {
    (0..d.k)
        .map(|f| {
            let test: Vec<usize> = (0..d.labels.len()).filter(|i| d.folds[*i] == f).collect();
            let mut train: Vec<usize> = (0..d.labels.len()).filter(|i| d.folds[*i] != f).collect();
            train.sort_by(|a, b| d.ids[*a].cmp(&d.ids[*b]));
            let sims = test
                .iter()
                .map(|t| {
                    train
                        .iter()
                        .map(|j| dot(&d.vectors[*t], &d.vectors[*j]))
                        .collect()
                })
                .collect();
            Fold { test, train, sims }
        })
        .collect()
}

/// A fold's classifier, trained as the service would train it on that fold's training images (or on
/// `keep` of them, for the learning curve).
pub struct Trained {
    /// Per test image: the labelled training images (positions in `Fold::train`), most similar
    /// first.
    orders: Vec<Vec<usize>>,
    prototypes: Vec<(String, Vec<f32>)>,
    pub head: Option<Head>,
    labels_per_category: f32,
}

/// Trains fold `fold`'s classifier on the training images whose positions `keep` accepts.
pub fn train_fold(d: &Data, fold: &Fold, c: &Classifier, keep: impl Fn(usize) -> bool) -> Trained {
    let members: Vec<usize> = (0..fold.train.len()).filter(|p| keep(*p)).collect();
    let mut sums: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for p in &members {
        let i = fold.train[*p];
        let sum = sums
            .entry(d.labels[i])
            .or_insert_with(|| vec![0.0; d.vectors[i].len()]);
        sum.iter_mut().zip(&d.vectors[i]).for_each(|(s, v)| *s += v);
    }
    let categories = sums.len();
    let prototypes = sums.into_iter().map(|(c, s)| (c.to_string(), s)).collect();
    let head = if c.head && members.len() >= c.min_labels {
        let labelled: Vec<Labelled> = members
            .iter()
            .map(|p| {
                let i = fold.train[*p];
                Labelled {
                    embedding: &d.vectors[i],
                    features: d.features_of(i),
                    category: d.labels[i],
                }
            })
            .collect();
        let settings = TrainSettings {
            l2: c.l2,
            shrinkage: c.shrinkage,
            ..Default::default()
        };
        lookalike_classifier::fit_labelled(&labelled, &settings).map(|f| f.head)
    } else {
        None
    };
    let orders = fold
        .sims
        .iter()
        .map(|row| {
            let mut order = members.clone();
            order.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
            order
        })
        .collect();
    Trained {
        labels_per_category: members.len() as f32 / categories.max(1) as f32,
        orders,
        prototypes,
        head,
    }
}

/// What the classifier answered for one test image, with the search it would run.
pub struct Answer {
    pub image: usize,
    pub prediction: Option<Prediction>,
    /// Share of the top 10 of the search in the predicted categories that have the image's label.
    pub p_at_10: Option<f64>,
}

/// Classifies a fold's test images with `trained`, with `decision` settings (so one trained fold can
/// be scored under several settings). `use_head = false` scores the untrained mixture alone.
pub fn answer(
    d: &Data,
    fold: &Fold,
    trained: &Trained,
    c: &Classifier,
    decision: &Settings,
    use_head: bool,
) -> Vec<Answer> {
    let head = trained
        .head
        .as_ref()
        .filter(|_| use_head)
        .map(|h| HeadInput {
            head: h,
            version: 1,
            labels_per_category: trained.labels_per_category,
        });
    fold.test
        .iter()
        .enumerate()
        .map(|(t, &image)| {
            let row = &fold.sims[t];
            let order = &trained.orders[t];
            let voters: Vec<(f32, String)> = order
                .iter()
                .take(c.neighbours)
                .map(|p| (row[*p], d.labels[fold.train[*p]].to_string()))
                .collect();
            let prediction = decide(
                &Evidence {
                    embedding: &d.vectors[image],
                    features: d.features_of(image),
                    voters: &voters,
                    prototypes: &trained.prototypes,
                    head,
                },
                decision,
            );
            let p_at_10 = prediction.as_ref().map(|p| {
                let (categories, _) =
                    categories_to_search(p, c.min_confidence, c.cover, c.max_categories);
                let shown: Vec<bool> = order
                    .iter()
                    .map(|p| d.labels[fold.train[*p]])
                    .filter(|l| categories.iter().any(|c| c == l))
                    .take(10)
                    .map(|l| l == d.labels[image])
                    .collect();
                if shown.is_empty() {
                    0.0
                } else {
                    shown.iter().filter(|r| **r).count() as f64 / shown.len() as f64
                }
            });
            Answer {
                image,
                prediction,
                p_at_10,
            }
        })
        .collect()
}

/// Classification figures of a set of answers.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Scores {
    pub images: usize,
    pub errors: usize,
    pub accuracy_top1: f64,
    pub accuracy_top3: f64,
    /// Expected calibration error of the top-1 confidence (10 bins).
    pub ece: f64,
    /// Mean negative log-likelihood of the right category (confidence floor 1e-6).
    pub nll: f64,
    /// P@10 of the search in the predicted categories (what users see; it restates the accuracy, as
    /// the labels are the categories).
    pub p_at_10_in_category: f64,
    /// Among wrong predictions: share of the top 10 that still had the right category.
    pub right_category_share_when_wrong: Option<f64>,
}

pub fn score(d: &Data, answers: &[Answer]) -> Scores {
    let n = answers.len();
    let mut s = Scores {
        images: n,
        ..Default::default()
    };
    if n == 0 {
        return s;
    }
    let mut calibration = Vec::new();
    let mut wrong_shares = Vec::new();
    for a in answers {
        let label = d.labels[a.image];
        let (top1, top3, p_right, confidence) = match &a.prediction {
            Some(p) => (
                p.category == label,
                p.ranking.iter().take(3).any(|(c, _)| c == label),
                p.ranking
                    .iter()
                    .find(|(c, _)| c == label)
                    .map_or(0.0, |(_, w)| *w as f64),
                p.confidence as f64,
            ),
            None => (false, false, 0.0, 0.0),
        };
        s.accuracy_top1 += top1 as u8 as f64;
        s.accuracy_top3 += top3 as u8 as f64;
        s.nll -= p_right.max(1e-6).ln();
        s.p_at_10_in_category += a.p_at_10.unwrap_or(0.0);
        calibration.push((confidence, top1));
        if !top1 {
            s.errors += 1;
            wrong_shares.push(a.p_at_10.unwrap_or(0.0));
        }
    }
    let nf = n as f64;
    s.accuracy_top1 /= nf;
    s.accuracy_top3 /= nf;
    s.nll /= nf;
    s.p_at_10_in_category /= nf;
    s.ece = super::expected_calibration_error(&calibration, super::ECE_BINS);
    s.right_category_share_when_wrong = (!wrong_shares.is_empty())
        .then(|| wrong_shares.iter().sum::<f64>() / wrong_shares.len() as f64);
    s
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_keep_groups_together_and_spread_categories() {
        let labels = ["a", "a", "a", "a", "b", "b", "b", "b"];
        let groups = ["p1", "p1", "p2", "p3", "q1", "q2", "q3", "q4"];
        let folds = assign_folds(&labels, &groups, 2);
        assert_eq!(folds[0], folds[1], "two views of p1 in one fold");
        for f in 0..2 {
            for l in ["a", "b"] {
                assert!(
                    (0..8).any(|i| labels[i] == l && folds[i] == f),
                    "fold {f} has some {l}: {folds:?}"
                );
            }
        }
        assert_eq!(folds, assign_folds(&labels, &groups, 2), "deterministic");
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn a_fold_never_learns_from_its_own_test_images() {
        // Each category's two images point in opposite-ish directions from the other category's, but
        // image 0 is an exact copy of image 2 (label b): with itself in training it would be right.
        let vectors = vec![
            unit(&[0.0, 1.0, 0.1]),
            unit(&[1.0, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.1]),
            unit(&[0.1, 1.0, 0.0]),
            unit(&[1.0, 0.0, 0.1]),
            unit(&[0.9, 0.1, 0.1]),
        ];
        let labels = ["a", "a", "b", "b", "a", "a"];
        let ids: Vec<String> = (0..6).map(|i| format!("id{i}")).collect();
        let folds = [0, 1, 1, 1, 1, 1];
        let d = Data {
            vectors: &vectors,
            features: None,
            labels: &labels,
            ids: &ids,
            folds: &folds,
            k: 2,
        };
        let c = Classifier {
            neighbours: 3,
            decision: Settings {
                neighbour_temperature: 0.05,
                prototype_temperature: 0.05,
                prototype_weight: 0.5,
                confidence_temperature: 1.0,
                head_takeover: 10.0,
            },
            head: false,
            l2: 1e-3,
            shrinkage: 1.0,
            min_labels: 10,
            min_confidence: 0.6,
            cover: 0.9,
            max_categories: 3,
        };
        let prepared = prepare(&d);
        assert_eq!(prepared[0].test, [0]);
        assert!(!prepared[0].train.contains(&0));
        let trained = train_fold(&d, &prepared[0], &c, |_| true);
        let answers = answer(&d, &prepared[0], &trained, &c, &c.decision, true);
        // Its nearest training image is the b copy: the fold gets it wrong, as it should.
        assert_eq!(answers[0].prediction.as_ref().unwrap().category, "b");
        let s = score(&d, &answers);
        assert_eq!((s.images, s.errors), (1, 1));
    }
}
