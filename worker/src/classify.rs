//! Category prediction from labelled neighbours: the items whose category a submitter provided vote,
//! each with the weight of its similarity to the new image.

use std::collections::HashMap;

use uuid::Uuid;

/// A predicted category and how sure the vote was (the winner's share of the total weight, 0..1).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub category: String,
    pub confidence: f32,
    /// Every category that got votes, best first, with its share.
    pub ranking: Vec<(String, f32)>,
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
    let mut ranking: Vec<(String, f32)> =
        weights.into_iter().map(|(c, w)| (c.to_string(), w / total)).collect();
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let (category, confidence) = ranking[0].clone();
    Some(Prediction { category, confidence, ranking })
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
        let p = vote(&[n(0.95, "bags"), n(0.70, "coat"), n(0.70, "coat"), n(0.69, "coat")], 0.05).unwrap();
        assert_eq!(p.category, "bags");
    }

    #[test]
    fn confidences_sum_to_one() {
        let p = vote(&[n(0.8, "a"), n(0.8, "b"), n(0.79, "c")], 0.05).unwrap();
        let sum: f32 = p.ranking.iter().map(|(_, w)| w).sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }

    #[test]
    fn only_items_with_provided_categories_vote() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let got = labelled(&[(a, 0.9), (b, 0.8)], &[(b, "coat".into())]);
        assert_eq!(got, vec![(0.8, "coat".to_string())]);
    }
}
