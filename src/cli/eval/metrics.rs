//! The figures: precision, recall, calibration error, and the raw cosine-kNN baseline over the
//! eval items' own vectors.

use super::*;

pub(super) struct RawScores {
    pub(super) p1: Option<f64>,
    pub(super) p10: Option<f64>,
    pub(super) knn5: Option<f64>,
    pub(super) recall5: Option<f64>,
}

/// Leave-one-out cosine kNN over the eval items' own vectors (normalised).
pub(super) fn raw_baseline(
    vectors: &[Vec<f32>],
    labels: &[&str],
    siblings: &[Vec<usize>],
) -> RawScores {
    let (mut p1, mut p10, mut knn5, mut recall5) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..vectors.len() {
        let ranked = nearest(vectors, i, K.max(VOTE_K).max(SAME_ITEM_K));
        let hits: Vec<bool> = ranked.iter().map(|&j| labels[j] == labels[i]).collect();
        p1.push(precision_at_k(&hits, 1));
        p10.push(precision_at_k(&hits, K));
        let votes: Vec<&str> = ranked.iter().take(VOTE_K).map(|&j| labels[j]).collect();
        knn5.push(flag(majority_vote(&votes) == Some(labels[i])));
        if !siblings[i].is_empty() {
            recall5.push(recall_at_k(&ranked, &siblings[i], SAME_ITEM_K));
        }
    }
    RawScores {
        p1: mean(&p1),
        p10: mean(&p10),
        knn5: mean(&knn5),
        recall5: mean(&recall5),
    }
}

// ---- metric math: small pure functions ----

pub(super) fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The k vectors most similar to `vectors[i]` (dot product of normalised vectors = cosine), itself left
/// out; ties keep the lower index first.
pub(super) fn nearest(vectors: &[Vec<f32>], i: usize, k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = (0..vectors.len())
        .filter(|&j| j != i)
        .map(|j| (dot(&vectors[i], &vectors[j]), j))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, j)| j).collect()
}

/// Share of relevant results among the first k returned (fewer than k returned: among those). An empty
/// answer scores 0.
pub(super) fn precision_at_k(relevant: &[bool], k: usize) -> f64 {
    let shown = &relevant[..relevant.len().min(k)];
    if shown.is_empty() {
        return 0.0;
    }
    shown.iter().filter(|&&r| r).count() as f64 / shown.len() as f64
}

/// The most frequent label; a tie goes to the label that appears first (the nearer neighbour).
pub(super) fn majority_vote<'a>(labels: &[&'a str]) -> Option<&'a str> {
    let count = |l: &str| labels.iter().filter(|&&x| x == l).count();
    let best = labels.iter().map(|l| count(l)).max()?;
    labels.iter().copied().find(|l| count(l) == best)
}

/// Expected calibration error: confidences in equal-width bins over [0, 1]; the mean |accuracy -
/// confidence| of each bin, weighted by its share of the predictions.
pub(super) fn expected_calibration_error(predictions: &[(f64, bool)], bins: usize) -> f64 {
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins]; // (count, confidence sum, correct)
    for &(confidence, correct) in predictions {
        let b = ((confidence.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += confidence;
        sums[b].2 += usize::from(correct);
    }
    let n = predictions.len() as f64;
    sums.iter()
        .filter(|(count, _, _)| *count > 0)
        .map(|&(count, conf, correct)| {
            let c = count as f64;
            (c / n) * (correct as f64 / c - conf / c).abs()
        })
        .sum()
}

/// Share of the relevant ids found among the first k ranked.
pub(super) fn recall_at_k(ranked: &[usize], relevant: &[usize], k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let top = &ranked[..ranked.len().min(k)];
    relevant.iter().filter(|r| top.contains(r)).count() as f64 / relevant.len() as f64
}

pub(super) fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

pub(super) fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}
