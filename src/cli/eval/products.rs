//! How a product's several images make one query (`GET /v1/products/{id}/similar?combine=`), measured
//! on a set's multi-view products (`products.json`): each view in turn is held out as a product of its
//! own, the product's other views search every other item grouped by product (a product scoring its
//! best image, as `group=product` does), and the held-out view should come first. Three ways compete:
//! `mean` (one query, the mean of the views' unit vectors), `max` (each view's query, a candidate
//! keeping its best cosine), and `first` (the first view alone: what a client does without the
//! endpoint).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::metrics::{dot, mean, normalise};

const WAYS: [&str; 3] = ["mean", "max", "first"];
/// Top products whose category is checked.
const TOP: usize = 5;

#[derive(Default)]
struct Scores {
    hit1: Vec<f64>,
    reciprocal_rank: Vec<f64>,
    category_p5: Vec<f64>,
}

/// The figures per way (`None` when the set has no product with two views or more): over every
/// held-out view, and over those whose query had two views or more (where the ways can differ).
pub(super) fn product_queries(
    vectors: &[Vec<f32>],
    labels: &[&str],
    products: &[Option<&str>],
) -> Option<Value> {
    let unit: Vec<Vec<f32>> = vectors.iter().cloned().map(normalise).collect();
    let mut views: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in products.iter().enumerate() {
        if let Some(p) = p {
            views.entry(p).or_default().push(i);
        }
    }
    let mut names: Vec<&&str> = views.keys().filter(|p| views[**p].len() >= 2).collect();
    names.sort();
    if names.is_empty() {
        return None;
    }
    let mut all: HashMap<&str, Scores> = HashMap::new();
    let mut several: HashMap<&str, Scores> = HashMap::new();
    let mut queries = (0, 0);
    for name in names {
        let members = &views[*name];
        for &held in members {
            let query: Vec<usize> = members.iter().copied().filter(|&i| i != held).collect();
            queries.0 += 1;
            queries.1 += usize::from(query.len() >= 2);
            for way in WAYS {
                let ranked = rank_products(&unit, products, &query, held, way);
                let rank = ranked.iter().position(|g| g.0 == held).expect("ranked") + 1;
                let top = &ranked[..TOP.min(ranked.len())];
                let in_category = top.iter().filter(|g| labels[g.0] == labels[held]).count();
                for scores in [Some(&mut all), (query.len() >= 2).then_some(&mut several)]
                    .into_iter()
                    .flatten()
                {
                    let s = scores.entry(way).or_default();
                    s.hit1.push(f64::from(u8::from(rank == 1)));
                    s.reciprocal_rank.push(1.0 / rank as f64);
                    s.category_p5.push(in_category as f64 / top.len() as f64);
                }
            }
        }
    }
    let table = |scores: &HashMap<&str, Scores>| -> Value {
        WAYS.iter()
            .filter_map(|w| {
                let s = scores.get(w)?;
                Some((
                    w.to_string(),
                    json!({
                        "hit_at_1": mean(&s.hit1),
                        "mrr": mean(&s.reciprocal_rank),
                        "category_p_at_5": mean(&s.category_p5),
                    }),
                ))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Some(json!({
        "held_out_views": queries.0,
        "all": table(&all),
        "queries_with_two_views_or_more": queries.1,
        "several": table(&several),
    }))
}

/// Every candidate product (each item's product, or the item alone; the held-out view alone), by its
/// best image's score for the query, best first: `(best image, score)`. The query's views are left out.
fn rank_products(
    unit: &[Vec<f32>],
    products: &[Option<&str>],
    query: &[usize],
    held: usize,
    way: &str,
) -> Vec<(usize, f32)> {
    let centre = normalise(
        (0..unit[0].len())
            .map(|d| query.iter().map(|&q| unit[q][d]).sum())
            .collect(),
    );
    let score = |i: usize| -> f32 {
        match way {
            "mean" => dot(&centre, &unit[i]),
            "max" => query
                .iter()
                .map(|&q| dot(&unit[q], &unit[i]))
                .fold(f32::MIN, f32::max),
            _ => dot(&unit[query[0]], &unit[i]),
        }
    };
    let mut best: HashMap<String, (usize, f32)> = HashMap::new();
    for i in (0..unit.len()).filter(|i| !query.contains(i)) {
        let key = match products[i] {
            Some(p) if i != held => format!("p:{p}"),
            _ => format!("i:{i}"),
        };
        let s = score(i);
        let entry = best.entry(key).or_insert((i, s));
        if s > entry.1 || (s == entry.1 && i < entry.0) {
            *entry = (i, s);
        }
    }
    let mut ranked: Vec<(usize, f32)> = best.into_values().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_out_view_between_its_siblings_is_found_by_the_mean_not_by_the_first_view() {
        // Product p: views at 0° and 90°, held-out view at 45°; a distractor at 10° beats it for
        // the first view alone, while the mean direction (45°) points at the held-out view.
        let at = |deg: f32| vec![deg.to_radians().cos(), deg.to_radians().sin()];
        let vectors = vec![at(0.0), at(90.0), at(45.0), at(10.0)];
        let labels = ["a", "a", "a", "b"];
        let products = [Some("p"), Some("p"), Some("p"), None];
        let query = [0, 1];
        let mean_rank = rank_products(&vectors, &products, &query, 2, "mean");
        assert_eq!(mean_rank[0].0, 2, "{mean_rank:?}");
        let first_rank = rank_products(&vectors, &products, &query, 2, "first");
        assert_eq!(first_rank[0].0, 3, "{first_rank:?}");
        let figures = product_queries(&vectors, &labels, &products).unwrap();
        assert_eq!(figures["held_out_views"], 3);
        assert_eq!(figures["queries_with_two_views_or_more"], 3);
    }

    #[test]
    fn sets_without_multi_view_products_have_no_figures() {
        let vectors = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert!(product_queries(&vectors, &["a", "b"], &[Some("p"), None]).is_none());
    }
}
