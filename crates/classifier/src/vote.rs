//! The labelled neighbours' vote and the category prototypes: two views of the same labels that need
//! no training, so they speak from a category's first label on.
//! - **neighbours**: the nearest labelled items vote, each weighted by its similarity;
//! - **prototypes**: the image is compared with each category's mean direction.
//!
//! The neighbours are sharp where the catalogue is dense; the prototypes are steadier where a category
//! has few or scattered examples.

use std::collections::HashMap;

use uuid::Uuid;

/// A predicted category and how sure the vote was (the winner's share of the total weight, 0..1).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub category: String,
    pub confidence: f32,
    /// Every category that got votes, best first, with its share.
    pub ranking: Vec<(String, f32)>,
    /// The cold-start prior spoke for some category (the worker's `prior` module).
    pub used_prior: bool,
    /// The version of the trained head that took part, if one did (see [`crate::head`]).
    pub head_version: Option<i32>,
}

/// Weighted vote over `(similarity, category)` of labelled neighbours. `None` when nobody voted.
///
/// Weights are `exp(similarity / temperature)`: cosine similarities of one model sit in a narrow band
/// (say 0.6..0.9), so a plain sum would give a barely-closer neighbour no more say than a far one.
pub fn vote(neighbours: &[(f32, String)], temperature: f32) -> Option<Prediction> {
    if neighbours.is_empty() {
        return None;
    }
    let max = neighbours.iter().map(|(s, _)| *s).fold(f32::MIN, f32::max);
    let mut weights: HashMap<&str, f32> = HashMap::new();
    for (score, category) in neighbours {
        *weights.entry(category.as_str()).or_default() += ((score - max) / temperature).exp();
    }
    let total: f32 = weights.values().sum();
    rank(
        weights
            .into_iter()
            .map(|(c, w)| (c.to_string(), w / total))
            .collect(),
    )
}

/// Softmax over the cosine similarity to each category's prototype (the normalised sum of its labelled
/// embeddings), with the same temperature idea as [`vote`].
pub fn prototype_scores(
    query: &[f32],
    prototypes: &[(String, Vec<f32>)],
    temperature: f32,
) -> Option<Prediction> {
    if prototypes.is_empty() {
        return None;
    }
    let sims: Vec<(String, f32)> = prototypes
        .iter()
        .filter_map(|(c, sum)| {
            let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
            (norm > 0.0).then(|| {
                (
                    c.clone(),
                    query.iter().zip(sum).map(|(a, b)| a * b).sum::<f32>() / norm,
                )
            })
        })
        .collect();
    let max = sims.iter().map(|(_, s)| *s).fold(f32::MIN, f32::max);
    let exps: Vec<(String, f32)> = sims
        .into_iter()
        .map(|(c, s)| (c, ((s - max) / temperature).exp()))
        .collect();
    let total: f32 = exps.iter().map(|(_, e)| e).sum();
    rank(exps.into_iter().map(|(c, e)| (c, e / total)).collect())
}

/// `weight * prototypes + (1 - weight) * neighbours`; either alone when the other has nothing to say.
pub fn fuse(
    neighbours: Option<Prediction>,
    prototypes: Option<Prediction>,
    weight: f32,
) -> Option<Prediction> {
    match (neighbours, prototypes) {
        (None, None) => None,
        (Some(p), None) | (None, Some(p)) => Some(p),
        (Some(n), Some(p)) => {
            let mut mixed: HashMap<String, f32> = HashMap::new();
            for (c, w) in n.ranking {
                *mixed.entry(c).or_default() += (1.0 - weight) * w;
            }
            for (c, w) in p.ranking {
                *mixed.entry(c).or_default() += weight * w;
            }
            rank(mixed.into_iter().collect())
        }
    }
}

/// Temperature scaling of a prediction: `p_c^(1/t)`, renormalised. The vote and the prototypes are
/// each a softmax with a temperature tuned for ranking; their mixture can still be too flat or too
/// sharp as a probability. One temperature fitted on labelled data (`lookalike eval`) fixes that
/// without changing which category wins.
pub fn calibrate(p: Option<Prediction>, temperature: f32) -> Option<Prediction> {
    let p = p?;
    if temperature == 1.0 {
        return Some(p);
    }
    let scaled: Vec<(String, f32)> = p
        .ranking
        .into_iter()
        .map(|(c, w)| (c, w.max(f32::MIN_POSITIVE).powf(1.0 / temperature)))
        .collect();
    let total: f32 = scaled.iter().map(|(_, w)| w).sum();
    rank(scaled.into_iter().map(|(c, w)| (c, w / total)).collect()).map(|q| Prediction {
        used_prior: p.used_prior,
        head_version: p.head_version,
        ..q
    })
}

/// Sorts `(category, probability)` best first (ties by name) into a prediction; `None` when empty.
pub fn rank(mut ranking: Vec<(String, f32)>) -> Option<Prediction> {
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let (category, confidence) = ranking.first()?.clone();
    Some(Prediction {
        category,
        confidence,
        ranking,
        used_prior: false,
        head_version: None,
    })
}

/// The categories to search for a prediction: the top one when the classifier is confident, else the
/// best few until they cover `cover` of the probability (eBay 2017), at most `max`. The flag says
/// whether the search was widened.
pub fn categories_to_search(
    p: &Prediction,
    min_confidence: f32,
    cover: f32,
    max: usize,
) -> (Vec<String>, bool) {
    if p.confidence >= min_confidence {
        return (vec![p.category.clone()], false);
    }
    let mut picked = Vec::new();
    let mut covered = 0.0;
    for (c, w) in &p.ranking {
        if picked.len() >= max.max(1) || covered >= cover {
            break;
        }
        picked.push(c.clone());
        covered += w;
    }
    (picked, true)
}

/// Keeps the neighbours that have a provided category, in the order of `hits`.
pub fn labelled(hits: &[(Uuid, f32)], provided: &[(Uuid, String)]) -> Vec<(f32, String)> {
    let by_id: HashMap<Uuid, &String> = provided.iter().map(|(id, c)| (*id, c)).collect();
    hits.iter()
        .filter_map(|(id, score)| by_id.get(id).map(|c| (*score, (*c).clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: f32, c: &str) -> (f32, String) {
        (s, c.to_string())
    }

    #[test]
    fn no_labelled_neighbours_means_no_prediction() {
        assert_eq!(vote(&[], 0.05), None);
    }

    #[test]
    fn majority_of_close_neighbours_wins_with_its_share_as_confidence() {
        let p = vote(&[n(0.9, "coat"), n(0.89, "coat"), n(0.7, "shoes")], 0.05).unwrap();
        assert_eq!(p.category, "coat");
        assert!(p.confidence > 0.9 && p.confidence <= 1.0, "{p:?}");
        assert_eq!(p.ranking.len(), 2);
    }

    #[test]
    fn a_much_closer_neighbour_outweighs_several_far_ones() {
        let p = vote(
            &[
                n(0.95, "bags"),
                n(0.70, "coat"),
                n(0.70, "coat"),
                n(0.69, "coat"),
            ],
            0.05,
        )
        .unwrap();
        assert_eq!(p.category, "bags");
    }

    #[test]
    fn confidences_sum_to_one() {
        let p = vote(&[n(0.8, "a"), n(0.8, "b"), n(0.79, "c")], 0.05).unwrap();
        let sum: f32 = p.ranking.iter().map(|(_, w)| w).sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }

    #[test]
    fn prototypes_pick_the_closest_category_direction() {
        let protos = vec![
            ("a".to_string(), vec![2.0, 0.0]),
            ("b".to_string(), vec![0.0, 5.0]),
        ];
        let p = prototype_scores(&[0.9, 0.1], &protos, 0.05).unwrap();
        assert_eq!(p.category, "a");
        assert!(p.confidence > 0.99);
    }

    #[test]
    fn fusion_mixes_both_views_and_falls_back_to_either() {
        let n = vote(&[n(0.9, "a")], 0.05);
        let p = prototype_scores(&[0.0, 1.0], &[("b".into(), vec![0.0, 1.0])], 0.05);
        let both = fuse(n.clone(), p.clone(), 0.3).unwrap();
        assert_eq!(both.category, "a");
        assert!((both.confidence - 0.7).abs() < 1e-5);
        assert_eq!(fuse(n.clone(), None, 0.3), n);
        assert_eq!(fuse(None, None, 0.3), None);
    }

    #[test]
    fn calibration_changes_confidence_but_never_the_winner() {
        let p = rank(vec![
            ("a".into(), 0.5),
            ("b".into(), 0.3),
            ("c".into(), 0.2),
        ]);
        let sharp = calibrate(p.clone(), 0.5).unwrap();
        assert_eq!(sharp.category, "a");
        assert!((sharp.confidence - 0.25 / 0.38).abs() < 1e-5, "{sharp:?}");
        let flat = calibrate(p.clone(), 2.0).unwrap();
        assert_eq!(flat.category, "a");
        assert!(flat.confidence < 0.5);
        assert_eq!(calibrate(p.clone(), 1.0), p);
        let total: f32 = sharp.ranking.iter().map(|(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn low_confidence_widens_the_search_to_the_top_categories() {
        let sure = Prediction {
            category: "a".into(),
            confidence: 0.9,
            ranking: vec![("a".into(), 0.9), ("b".into(), 0.1)],
            used_prior: false,
            head_version: None,
        };
        assert_eq!(
            categories_to_search(&sure, 0.6, 0.9, 3),
            (vec!["a".to_string()], false)
        );
        let unsure = Prediction {
            category: "a".into(),
            confidence: 0.4,
            ranking: vec![
                ("a".into(), 0.4),
                ("b".into(), 0.35),
                ("c".into(), 0.2),
                ("d".into(), 0.05),
            ],
            used_prior: false,
            head_version: None,
        };
        assert_eq!(
            categories_to_search(&unsure, 0.6, 0.9, 3),
            (vec!["a".into(), "b".into(), "c".into()], true)
        );
        assert_eq!(
            categories_to_search(&unsure, 0.6, 0.7, 3),
            (vec!["a".into(), "b".into()], true)
        );
    }

    #[test]
    fn only_items_with_provided_categories_vote() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let got = labelled(&[(a, 0.9), (b, 0.8)], &[(b, "coat".into())]);
        assert_eq!(got, vec![(0.8, "coat".to_string())]);
    }
}
