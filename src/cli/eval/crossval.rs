//! The cross-validated classification figures `lookalike eval` reports, all under the same folds: the
//! service's classifier (head mixed with the untrained vote), the untrained vote alone (the classifier
//! before the head existed) and the head alone; optionally how each grows with the labels.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use lookalike_classifier::Settings;
use serde_json::{Value, json};

use super::folds::{self, Answer, Classifier, Data, Scores, answer, prepare, score, train_fold};

pub struct CrossVal {
    pub fused: Scores,
    pub vote: Scores,
    pub head: Option<Scores>,
    /// The service's prediction for each image of the first fold (by image index).
    pub first_fold: HashMap<usize, Option<String>>,
    pub curve: Option<Vec<Value>>,
    /// Training time of a head (both rounds of `fit`) per 10,000 labelled items, from the folds.
    pub train_ms_per_10k: Option<f64>,
}

/// The head alone, with its own fitted temperature.
pub fn head_only(d: &Settings) -> Settings {
    Settings {
        head_takeover: 0.0,
        confidence_temperature: 1.0,
        ..*d
    }
}

pub fn run(d: &Data, c: &Classifier, curve: bool) -> CrossVal {
    let prepared = prepare(d);
    let (mut fused, mut vote, mut head) = (Vec::new(), Vec::new(), Vec::new());
    let (mut train_ms, mut trained_on) = (0.0, 0usize);
    for (f, fold) in prepared.iter().enumerate() {
        let t = Instant::now();
        let trained = train_fold(d, fold, c, |_| true);
        if trained.head.is_some() {
            train_ms += t.elapsed().as_secs_f64() * 1000.0;
            trained_on += fold.train.len();
        }
        fused.extend(answer(d, fold, &trained, c, &c.decision, true));
        vote.extend(answer(d, fold, &trained, c, &c.decision, false));
        if trained.head.is_some() {
            head.extend(answer(d, fold, &trained, c, &head_only(&c.decision), true));
        }
        eprintln!("cross-validation: fold {}/{} done", f + 1, prepared.len());
    }
    let first_fold = fused
        .iter()
        .filter(|a| d.folds[a.image] == 0)
        .map(|a| (a.image, a.prediction.as_ref().map(|p| p.category.clone())))
        .collect();
    CrossVal {
        fused: score(d, &fused),
        vote: score(d, &vote),
        head: (head.len() == fused.len()).then(|| score(d, &head)),
        first_fold,
        curve: curve.then(|| learning_curve(d, c, &prepared)),
        train_ms_per_10k: (trained_on > 0).then(|| train_ms / trained_on as f64 * 10_000.0),
    }
}

/// Share of the first fold's images on which the service (end to end) and the folds in process
/// predicted the same category.
pub fn agreement(cv: &CrossVal, service: &HashMap<usize, Option<String>>) -> Value {
    let compared: Vec<bool> = service
        .iter()
        .filter_map(|(i, p)| cv.first_fold.get(i).map(|q| p == q))
        .collect();
    let same = compared.iter().filter(|s| **s).count();
    json!({
        "images": compared.len(),
        "same_category": same,
        "share": (!compared.is_empty()).then(|| same as f64 / compared.len() as f64),
    })
}

/// Which of the fold's training items are among the first `n` of their category (in the fold's
/// training order): a catalogue with only `n` labels per category.
pub fn first_labels(d: &Data, fold: &folds::Fold, n: usize) -> Vec<bool> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    fold.train
        .iter()
        .map(|i| {
            let k = seen.entry(d.labels[*i]).or_default();
            *k += 1;
            *k <= n
        })
        .collect()
}

/// Accuracy of the vote, the head and the service's mixture when each category has only its first
/// `n` training labels (the test folds unchanged).
fn learning_curve(d: &Data, c: &Classifier, prepared: &[folds::Fold]) -> Vec<Value> {
    let most = prepared
        .iter()
        .flat_map(|f| {
            let mut per: BTreeMap<&str, usize> = BTreeMap::new();
            for i in &f.train {
                *per.entry(d.labels[*i]).or_default() += 1;
            }
            per.into_values()
        })
        .max()
        .unwrap_or(0);
    let mut steps: Vec<usize> = [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]
        .into_iter()
        .filter(|n| *n < most)
        .collect();
    steps.push(most);
    // The curve trains a head from the first labels on: that is the point of it.
    let curve_c = Classifier {
        min_labels: 0,
        ..*c
    };
    steps
        .into_iter()
        .map(|n| {
            let (mut fused, mut vote, mut head): (Vec<Answer>, Vec<Answer>, Vec<Answer>) =
                Default::default();
            for fold in prepared {
                let keep = first_labels(d, fold, n);
                let trained = train_fold(d, fold, &curve_c, |p| keep[p]);
                fused.extend(answer(d, fold, &trained, c, &c.decision, true));
                vote.extend(answer(d, fold, &trained, c, &c.decision, false));
                if trained.head.is_some() {
                    head.extend(answer(d, fold, &trained, c, &head_only(&c.decision), true));
                }
            }
            eprintln!("learning curve: {n} labels per category done");
            let acc = |a: &[Answer]| (!a.is_empty()).then(|| score(d, a).accuracy_top1);
            json!({
                "labels_per_category": n,
                "vote": acc(&vote),
                "head": if head.len() == fused.len() { acc(&head) } else { None },
                "lookalike": acc(&fused),
            })
        })
        .collect()
}

impl CrossVal {
    pub fn json(&self) -> Value {
        json!({
            "lookalike": self.fused,
            "vote": self.vote,
            "head": self.head,
            "learning_curve": self.curve,
            "head_training_ms_per_10k_items": self.train_ms_per_10k,
        })
    }
}
