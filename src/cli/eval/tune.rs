//! `lookalike eval DEV --tune OUT.json`: chooses the classifier settings on a development folder, in
//! stages, each by cross-validated top-1 accuracy (ties: lower log-loss):
//! 1. the untrained mixture: neighbour and prototype temperatures, prototype weight;
//! 2. the head's whitening shrinkage and L2 penalty (head alone);
//! 3. the head's takeover point: by mean accuracy over catalogues with 1, 2, 3, 5, 10, 20, 50, 100 and
//!    all labels per category (the point only matters while labels are few);
//! 4. the confidence temperature, by log-loss of the final mixture (the winner never changes).
//!
//! The folder must not be one whose figures are reported: the README's figures come from other sets.

use lookalike_classifier::{Settings, calibrate};
use serde_json::{Value, json};

use super::crossval::first_labels;
use super::folds::{Answer, Classifier, Data, Fold, Scores, answer, prepare, score, train_fold};

const TEMPERATURES: [f32; 4] = [0.01, 0.02, 0.05, 0.1];
const WEIGHTS: [f32; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];
const PENALTIES: [f64; 7] = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5];
const SHRINKAGES: [f64; 4] = [0.1, 0.3, 1.0, 3.0];
const TAKEOVERS: [f32; 8] = [0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0];
/// Labels per category of the catalogues the takeover point is chosen over (and all of them).
const BUDGETS: [usize; 8] = [1, 2, 3, 5, 10, 20, 50, 100];

fn better(a: &Scores, b: &Scores) -> bool {
    a.accuracy_top1 > b.accuracy_top1 + 1e-12
        || ((a.accuracy_top1 - b.accuracy_top1).abs() <= 1e-12 && a.nll < b.nll)
}

pub fn tune(d: &Data, base: &Classifier) -> Value {
    let prepared = prepare(d);
    let mut c = *base;
    let mut grid = serde_json::Map::new();

    // 1. The untrained mixture (no training needed: one fold set-up serves every combination).
    c.head = false;
    let untrained: Vec<_> = prepared
        .iter()
        .map(|f| train_fold(d, f, &c, |_| true))
        .collect();
    let mut best: Option<(Settings, Scores)> = None;
    let mut rows = Vec::new();
    for nt in TEMPERATURES {
        for pt in TEMPERATURES {
            for w in WEIGHTS {
                let s = Settings {
                    neighbour_temperature: nt,
                    prototype_temperature: pt,
                    prototype_weight: w,
                    confidence_temperature: 1.0,
                    ..base.decision
                };
                let answers: Vec<Answer> = prepared
                    .iter()
                    .zip(&untrained)
                    .flat_map(|(f, t)| answer(d, f, t, &c, &s, false))
                    .collect();
                let sc = score(d, &answers);
                rows.push(json!([nt, pt, w, sc.accuracy_top1]));
                if best.as_ref().is_none_or(|(_, b)| better(&sc, b)) {
                    best = Some((s, sc));
                }
            }
        }
    }
    grid.insert(
        "vote [neighbour_temperature, prototype_temperature, prototype_weight, accuracy]".into(),
        json!(rows),
    );
    let (mut decision, vote_scores) = best.expect("a grid");
    eprintln!("tune: vote {:.4}", vote_scores.accuracy_top1);

    // 2. The head's penalty, head alone.
    c.head = true;
    c.min_labels = 0;
    let head_only = super::crossval::head_only(&decision);
    let mut best_head: Option<((f64, f64), Scores, Vec<_>)> = None;
    let mut rows = Vec::new();
    for shrinkage in SHRINKAGES {
        for l2 in PENALTIES {
            (c.l2, c.shrinkage) = (l2, shrinkage);
            let trained: Vec<_> = prepared
                .iter()
                .map(|f| train_fold(d, f, &c, |_| true))
                .collect();
            let answers = answers_of(d, &prepared, &trained, &c, &head_only);
            let sc = score(d, &answers);
            eprintln!(
                "tune: head shrinkage {shrinkage} l2 {l2}: {:.4}",
                sc.accuracy_top1
            );
            rows.push(json!([shrinkage, l2, sc.accuracy_top1, sc.nll]));
            if best_head.as_ref().is_none_or(|(_, b, _)| better(&sc, b)) {
                best_head = Some(((shrinkage, l2), sc, trained));
            }
        }
    }
    grid.insert(
        "head [shrinkage, l2, accuracy, log_loss]".into(),
        json!(rows),
    );
    let ((shrinkage, l2), head_scores, trained) = best_head.expect("a grid");
    (c.l2, c.shrinkage) = (l2, shrinkage);

    // 3. Where the head takes over: the head and the vote of each smaller catalogue trained once,
    //    every takeover point scored on all of them.
    let mut budgeted: Vec<Vec<super::folds::Trained>> = BUDGETS
        .iter()
        .map(|&n| {
            let c_n = Classifier {
                min_labels: base.min_labels,
                ..c
            };
            prepared
                .iter()
                .map(|f| {
                    let keep = first_labels(d, f, n);
                    train_fold(d, f, &c_n, |p| keep[p])
                })
                .collect()
        })
        .collect();
    budgeted.push(trained);
    let mut best_takeover: Option<(f32, (f64, f64), Vec<Answer>)> = None;
    let mut rows = Vec::new();
    for takeover in TAKEOVERS {
        let s = Settings {
            head_takeover: takeover,
            confidence_temperature: 1.0,
            ..decision
        };
        let per_budget: Vec<Scores> = budgeted
            .iter()
            .map(|t| score(d, &answers_of(d, &prepared, t, &c, &s)))
            .collect();
        let mean =
            |f: fn(&Scores) -> f64| per_budget.iter().map(f).sum::<f64>() / per_budget.len() as f64;
        let key = (mean(|s| s.accuracy_top1), mean(|s| s.nll));
        rows.push(json!([
            takeover,
            key.0,
            per_budget
                .iter()
                .map(|s| s.accuracy_top1)
                .collect::<Vec<_>>()
        ]));
        if best_takeover.as_ref().is_none_or(|(_, b, _)| {
            key.0 > b.0 + 1e-12 || ((key.0 - b.0).abs() <= 1e-12 && key.1 < b.1)
        }) {
            let all_labels = budgeted.last().expect("all labels");
            best_takeover = Some((takeover, key, answers_of(d, &prepared, all_labels, &c, &s)));
        }
    }
    grid.insert(
        "takeover [head_takeover, mean accuracy, accuracy with 1, 2, 3, 5, 10, 20, 50, 100, all labels per category]".into(),
        json!(rows),
    );
    let (takeover, _, mut answers) = best_takeover.expect("a grid");
    let fused_scores = score(d, &answers);
    decision.head_takeover = takeover;
    eprintln!("tune: head_takeover {takeover}");

    // 4. Confidence temperature: log-loss of the calibrated mixture.
    let raw: Vec<_> = answers.iter().map(|a| a.prediction.clone()).collect();
    let mut best_t = (1.0f32, f64::MAX);
    for i in -30..=30 {
        let t = 2f32.powf(i as f32 / 10.0);
        for (a, p) in answers.iter_mut().zip(&raw) {
            a.prediction = calibrate(p.clone(), t);
        }
        let nll = score(d, &answers).nll;
        if nll < best_t.1 {
            best_t = (t, nll);
        }
    }
    for (a, p) in answers.iter_mut().zip(&raw) {
        a.prediction = calibrate(p.clone(), best_t.0);
    }
    decision.confidence_temperature = best_t.0;
    let calibrated = score(d, &answers);
    c.decision = decision;
    c.min_labels = base.min_labels;
    json!({
        "chosen": c.json(),
        "scores": {
            "vote": vote_scores,
            "head": head_scores,
            "lookalike_before_calibration": fused_scores,
            "lookalike": calibrated,
        },
        "grid": grid,
    })
}

fn answers_of(
    d: &Data,
    prepared: &[Fold],
    trained: &[super::folds::Trained],
    c: &Classifier,
    s: &Settings,
) -> Vec<Answer> {
    prepared
        .iter()
        .zip(trained)
        .flat_map(|(f, t)| answer(d, f, t, c, s, true))
        .collect()
}
