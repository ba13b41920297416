//! Behaviour every [`VectorIndex`] backend must show, written once against `&dyn VectorIndex`
//! so the embedded and the server backends run the very same checks.
//!
//! Each check works in its own namespace (fresh UUIDs, categories and model ids carrying a
//! random token), so the checks can share one index and leave each other's data alone. They
//! do assume nobody else writes *uncategorised* points to the index while they run.
//! Checks panic on failure, like assertions in a test.

use std::collections::HashSet;

use uuid::Uuid;

use lookalike_core::fields::{Fields, parse_query};

use crate::{
    CategoryFilter, FieldKind, Group, GroupBy, Hit, IndexError, Point, SearchRequest, VectorIndex,
};

/// Calls `$m!` with the name of every check, so that each backend's test file makes one test per
/// check without keeping its own list (a new check reaches every backend).
#[macro_export]
macro_rules! for_each_conformance_check {
    ($m:ident) => {
        $m!(
            ping_and_name,
            nearest_first,
            category_filter,
            any_of_filter,
            uncategorised_filter,
            exclude_id,
            paging,
            min_score,
            model_filter,
            upsert_is_idempotent,
            delete,
            set_category,
            get_vector_roundtrip,
            attrs_roundtrip,
            recommend_best_score,
            field_filters,
            set_attrs,
            invalid_dimension,
            grouped_by_product,
            grouped_ties,
            grouped_with_filters,
            grouped_paging,
            grouped_duplicate_key,
            grouped_crowded_products,
        );
    };
}

/// All checks in turn on one index of dimension `dim` (at least 8).
pub async fn run_all(index: &dyn VectorIndex, dim: usize) {
    macro_rules! each {
        ($($check:ident),* $(,)?) => {$( $check(index, dim).await; )*};
    }
    for_each_conformance_check!(each);
}

/// Unique names and reproducible random vectors for one check.
struct Scope {
    token: String,
    model: String,
    dim: usize,
    rng: u64,
}

impl Scope {
    fn new(dim: usize) -> Self {
        assert!(dim >= 8, "conformance checks need dim >= 8");
        let id = Uuid::new_v4();
        let token = id.simple().to_string()[..12].to_owned();
        Self {
            model: format!("model-{token}"),
            token,
            dim,
            rng: id.as_u64_pair().0 | 1,
        }
    }

    fn cat(&self, name: &str) -> String {
        format!("{name}-{}", self.token)
    }

    /// SplitMix64: no rand dependency in the library for the sake of tests.
    fn next(&mut self) -> f32 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..self.dim).map(|_| self.next()).collect()
    }

    fn point(&mut self, category: Option<&str>) -> Point {
        Point {
            id: Uuid::new_v4(),
            vector: self.vector(),
            category: category.map(str::to_owned),
            model_id: self.model.clone(),
            attrs: None,
        }
    }

    fn points(&mut self, n: usize, category: Option<&str>) -> Vec<Point> {
        (0..n).map(|_| self.point(category)).collect()
    }

    /// A unit vector whose cosine similarity to `query` is `sim`: the query's direction mixed
    /// with a random one orthogonal to it, so checks can lay points out at chosen ranks.
    fn at(&mut self, query: &[f32], sim: f32) -> Vec<f32> {
        let q = unit(query);
        let mut r = self.vector();
        let along: f32 = r.iter().zip(&q).map(|(x, y)| x * y).sum();
        r.iter_mut().zip(&q).for_each(|(x, y)| *x -= along * y);
        let r = unit(&r);
        let across = (1.0 - sim * sim).max(0.0).sqrt();
        q.iter()
            .zip(&r)
            .map(|(a, b)| sim * a + across * b)
            .collect()
    }

    /// A point of `category` at similarity `sim` to `query`, with `attrs` holding `keys` (key
    /// name, value: null when `None`); no attrs at all when `keys` is empty.
    fn member(
        &mut self,
        category: &str,
        query: &[f32],
        sim: f32,
        keys: &[(GroupBy, Option<&str>)],
    ) -> Point {
        let attrs = (!keys.is_empty()).then(|| {
            let mut attrs = serde_json::Map::new();
            attrs.insert("external_id".into(), serde_json::Value::Null);
            for (by, value) in keys {
                attrs.insert(by.attr().into(), (*value).into());
            }
            serde_json::Value::Object(attrs)
        });
        Point {
            vector: self.at(query, sim),
            attrs,
            ..self.point(Some(category))
        }
    }

    fn query(&self, vector: &[f32], limit: usize) -> SearchRequest {
        SearchRequest {
            model_id: Some(self.model.clone()),
            ..SearchRequest::new(vector.to_vec(), limit)
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn ids(hits: &[Hit]) -> Vec<Uuid> {
    hits.iter().map(|h| h.id).collect()
}

async fn upsert(index: &dyn VectorIndex, points: &[Point]) {
    index.upsert(points.to_vec()).await.expect("upsert");
}

async fn search(index: &dyn VectorIndex, req: SearchRequest) -> Vec<Hit> {
    index.search(req).await.expect("search")
}

async fn count(index: &dyn VectorIndex, filter: CategoryFilter) -> u64 {
    index.count(filter).await.expect("count")
}

pub async fn ping_and_name(index: &dyn VectorIndex, _dim: usize) {
    index.ping().await.expect("ping");
    assert!(!index.name().is_empty());
}

/// The query's own vector comes first with a score of about 1; scores never increase.
pub async fn nearest_first(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("shoes");
    let points = s.points(20, Some(&cat));
    upsert(index, &points).await;
    for target in [&points[0], &points[7], &points[19]] {
        let hits = search(index, s.query(&target.vector, 5)).await;
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].id, target.id, "identical vector must rank first");
        assert!(
            (hits[0].score - 1.0).abs() < 1e-3,
            "score {}",
            hits[0].score
        );
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(hits.iter().all(|h| h.category.as_deref() == Some(&cat)));
    }
}

pub async fn category_filter(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let (a, b) = (s.cat("bags"), s.cat("hats"));
    let in_a = s.points(5, Some(&a));
    let in_b = s.points(5, Some(&b));
    upsert(index, &[in_a.clone(), in_b.clone()].concat()).await;
    let req = SearchRequest {
        filter: CategoryFilter::One(a.clone()),
        ..s.query(&in_b[0].vector, 10)
    };
    let hits = search(index, req).await;
    assert_eq!(hits.len(), 5, "only the 5 points of the category");
    assert!(hits.iter().all(|h| h.category.as_deref() == Some(&a)));
    assert_eq!(count(index, CategoryFilter::One(a)).await, 5);
    assert_eq!(count(index, CategoryFilter::One(s.cat("none"))).await, 0);
}

pub async fn any_of_filter(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let (a, b, c) = (s.cat("a"), s.cat("b"), s.cat("c"));
    let points = [
        s.points(3, Some(&a)),
        s.points(4, Some(&b)),
        s.points(5, Some(&c)),
    ]
    .concat();
    upsert(index, &points).await;
    let wanted = vec![a.clone(), b.clone()];
    let req = SearchRequest {
        filter: CategoryFilter::AnyOf(wanted.clone()),
        ..s.query(&points[11].vector, 20)
    };
    let hits = search(index, req).await;
    assert_eq!(hits.len(), 7);
    assert!(
        hits.iter()
            .all(|h| h.category == Some(a.clone()) || h.category == Some(b.clone()))
    );
    assert_eq!(count(index, CategoryFilter::AnyOf(wanted)).await, 7);
    let none = SearchRequest {
        filter: CategoryFilter::AnyOf(Vec::new()),
        ..s.query(&points[0].vector, 20)
    };
    assert!(
        search(index, none).await.is_empty(),
        "empty AnyOf matches nothing"
    );
    assert_eq!(count(index, CategoryFilter::AnyOf(Vec::new())).await, 0);
}

pub async fn uncategorised_filter(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let before = count(index, CategoryFilter::Uncategorised).await;
    let bare = s.points(3, None);
    let tagged = s.points(3, Some(&s.cat("tagged")));
    upsert(index, &[bare.clone(), tagged].concat()).await;
    assert_eq!(
        count(index, CategoryFilter::Uncategorised).await,
        before + 3
    );
    let req = SearchRequest {
        filter: CategoryFilter::Uncategorised,
        ..s.query(&bare[0].vector, 10)
    };
    let hits = search(index, req).await;
    let expected: HashSet<Uuid> = bare.iter().map(|p| p.id).collect();
    assert_eq!(ids(&hits).into_iter().collect::<HashSet<_>>(), expected);
    assert!(hits.iter().all(|h| h.category.is_none()));
}

pub async fn exclude_id(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let points = s.points(6, Some(&s.cat("x")));
    upsert(index, &points).await;
    let req = SearchRequest {
        exclude: vec![points[2].id],
        ..s.query(&points[2].vector, 10)
    };
    let hits = search(index, req).await;
    assert_eq!(hits.len(), 5);
    assert!(!ids(&hits).contains(&points[2].id));
    let req = SearchRequest {
        exclude: vec![points[2].id, points[4].id],
        ..s.query(&points[2].vector, 10)
    };
    let hits = search(index, req).await;
    assert_eq!(hits.len(), 4);
    assert!(!ids(&hits).contains(&points[4].id));
}

/// Pages of `limit` at growing `offset` line up with one big result list.
pub async fn paging(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let points = s.points(12, Some(&s.cat("page")));
    upsert(index, &points).await;
    let query = s.vector();
    let full = ids(&search(index, s.query(&query, 12)).await);
    assert_eq!(full.len(), 12);
    let mut paged = Vec::new();
    for offset in [0, 5, 10] {
        let req = SearchRequest {
            offset,
            ..s.query(&query, 5)
        };
        paged.extend(ids(&search(index, req).await));
    }
    assert_eq!(paged, full);
    let past_end = SearchRequest {
        offset: 12,
        ..s.query(&query, 5)
    };
    assert!(search(index, past_end).await.is_empty());
    assert!(search(index, s.query(&query, 0)).await.is_empty());
}

pub async fn min_score(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let mut points = s.points(10, Some(&s.cat("score")));
    // A near duplicate of the query, so some hits sit clearly above a high threshold.
    let query = points[0].vector.clone();
    points[1].vector = query.iter().map(|x| x + 0.1 * s.next()).collect();
    upsert(index, &points).await;
    for threshold in [0.95_f32, 0.5, 0.0] {
        let req = SearchRequest {
            min_score: Some(threshold),
            ..s.query(&query, 10)
        };
        let hits = search(index, req).await;
        assert!(hits.iter().all(|h| h.score >= threshold - 1e-4));
        let got: HashSet<Uuid> = ids(&hits).into_iter().collect();
        for p in &points {
            let sim = cosine(&query, &p.vector);
            if sim > threshold + 1e-3 {
                assert!(
                    got.contains(&p.id),
                    "similarity {sim} >= {threshold} missing"
                );
            } else if sim < threshold - 1e-3 {
                assert!(
                    !got.contains(&p.id),
                    "similarity {sim} < {threshold} returned"
                );
            }
        }
    }
}

/// Vectors of another model are invisible to a query for this model, even when identical.
pub async fn model_filter(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("model");
    let mine = s.points(4, Some(&cat));
    let theirs: Vec<Point> = mine
        .iter()
        .map(|p| Point {
            id: Uuid::new_v4(),
            model_id: format!("other-{}", s.model),
            ..p.clone()
        })
        .collect();
    upsert(index, &[mine.clone(), theirs.clone()].concat()).await;
    let hits = search(index, s.query(&mine[0].vector, 10)).await;
    let expected: HashSet<Uuid> = mine.iter().map(|p| p.id).collect();
    assert_eq!(ids(&hits).into_iter().collect::<HashSet<_>>(), expected);
    let any_model = SearchRequest {
        filter: CategoryFilter::One(cat.clone()),
        ..SearchRequest::new(mine[0].vector.clone(), 10)
    };
    assert_eq!(
        search(index, any_model).await.len(),
        8,
        "no model filter: both"
    );
    assert_eq!(count(index, CategoryFilter::One(cat)).await, 8);
}

pub async fn upsert_is_idempotent(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("dup");
    let mut point = s.point(Some(&cat));
    upsert(index, &[point.clone(), point.clone()]).await;
    upsert(index, std::slice::from_ref(&point)).await;
    assert_eq!(count(index, CategoryFilter::One(cat.clone())).await, 1);
    // A re-upsert with a new vector replaces the old one.
    point.vector = s.vector();
    upsert(index, std::slice::from_ref(&point)).await;
    assert_eq!(count(index, CategoryFilter::One(cat)).await, 1);
    let hits = search(index, s.query(&point.vector, 5)).await;
    assert_eq!(ids(&hits), vec![point.id]);
    assert!((hits[0].score - 1.0).abs() < 1e-3);
}

pub async fn delete(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("del");
    let points = s.points(3, Some(&cat));
    upsert(index, &points).await;
    index.delete(&[points[0].id]).await.expect("delete");
    assert_eq!(count(index, CategoryFilter::One(cat)).await, 2);
    assert_eq!(index.get_vector(points[0].id).await.expect("get"), None);
    let hits = search(index, s.query(&points[0].vector, 10)).await;
    assert!(!ids(&hits).contains(&points[0].id));
    assert_eq!(hits.len(), 2);
    index
        .delete(&[Uuid::new_v4()])
        .await
        .expect("unknown ids are ignored");
    index.delete(&[]).await.expect("empty delete");
}

/// Reclassification moves a point between categories without touching its vector.
pub async fn set_category(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let (a, b) = (s.cat("from"), s.cat("to"));
    let point = s.point(Some(&a));
    upsert(index, std::slice::from_ref(&point)).await;
    let set = index.set_category(point.id, Some(b.clone())).await;
    set.expect("set_category");
    assert_eq!(count(index, CategoryFilter::One(a.clone())).await, 0);
    assert_eq!(count(index, CategoryFilter::One(b.clone())).await, 1);
    let req = SearchRequest {
        filter: CategoryFilter::One(b.clone()),
        ..s.query(&point.vector, 5)
    };
    let hits = search(index, req).await;
    assert_eq!(ids(&hits), vec![point.id]);
    assert_eq!(hits[0].category.as_deref(), Some(b.as_str()));
    assert!((hits[0].score - 1.0).abs() < 1e-3, "vector kept");

    index.set_category(point.id, None).await.expect("clear");
    assert_eq!(count(index, CategoryFilter::One(b)).await, 0);
    let req = SearchRequest {
        filter: CategoryFilter::Uncategorised,
        ..s.query(&point.vector, 5)
    };
    let hits = search(index, req).await;
    assert_eq!(ids(&hits), vec![point.id]);
    assert_eq!(hits[0].category, None);

    let missing = index.set_category(Uuid::new_v4(), Some(a)).await;
    assert!(
        matches!(missing, Err(IndexError::NotFound(_))),
        "{missing:?}"
    );
}

/// The stored vector points the same way as the upserted one; cosine backends may return it
/// normalised to unit length.
pub async fn get_vector_roundtrip(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let mut point = s.point(Some(&s.cat("vec")));
    point.vector.iter_mut().for_each(|x| *x *= 3.0);
    upsert(index, std::slice::from_ref(&point)).await;
    let stored = index
        .get_vector(point.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(stored.len(), dim);
    assert!(cosine(&stored, &point.vector) > 0.9999);
    let norm = stored.iter().map(|x| x * x).sum::<f32>().sqrt();
    let input_norm = point.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() < 1e-3 || (norm - input_norm).abs() < 1e-3 * input_norm,
        "stored norm {norm}: neither unit nor the input's {input_norm}"
    );
    assert_eq!(index.get_vector(Uuid::new_v4()).await.expect("get"), None);
}

/// A wrong dimension is a permanent error: retrying cannot help.
pub async fn invalid_dimension(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let mut point = s.point(None);
    point.vector.push(0.5);
    let err = index
        .upsert(vec![point.clone()])
        .await
        .expect_err("dim + 1");
    assert!(
        matches!(err, IndexError::Invalid(_)) && !err.is_transient(),
        "{err:?}"
    );
    let err = index
        .search(s.query(&point.vector, 3))
        .await
        .expect_err("dim + 1");
    assert!(matches!(err, IndexError::Invalid(_)), "{err:?}");
    assert_eq!(index.get_vector(point.id).await.expect("get"), None);
}

/// Attributes come back with hits and with `get_point`, survive a category change, and an upsert
/// replaces them (or removes them when it has none).
pub async fn attrs_roundtrip(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("attrs");
    let mut point = s.point(Some(&cat));
    let attrs =
        serde_json::json!({"external_id": "sku-1", "metadata": {"title": "coat", "n": [1, 2]}});
    point.attrs = Some(attrs.clone());
    let bare = s.point(Some(&cat));
    upsert(index, &[point.clone(), bare.clone()]).await;

    let hits = index
        .search(SearchRequest {
            filter: CategoryFilter::One(cat.clone()),
            ..SearchRequest::new(point.vector.clone(), 2)
        })
        .await
        .expect("search");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].id, point.id);
    assert_eq!(hits[0].attrs, Some(attrs.clone()));
    assert_eq!(hits[1].attrs, None, "a point stored without attrs has none");

    let stored = index
        .get_point(point.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(stored.category.as_deref(), Some(cat.as_str()));
    assert_eq!(stored.model_id.as_deref(), Some(s.model.as_str()));
    assert_eq!(stored.attrs, Some(attrs.clone()));
    assert_eq!(stored.vector.len(), dim);

    let other = s.cat("attrs-moved");
    index
        .set_category(point.id, Some(other.clone()))
        .await
        .expect("set_category");
    let stored = index
        .get_point(point.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(stored.category.as_deref(), Some(other.as_str()));
    assert_eq!(
        stored.attrs,
        Some(attrs),
        "a category change keeps the attrs"
    );

    upsert(
        index,
        &[Point {
            attrs: None,
            ..point.clone()
        }],
    )
    .await;
    let stored = index
        .get_point(point.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(stored.attrs, None, "an upsert replaces the whole payload");
    index.delete(&[point.id, bare.id]).await.expect("delete");
    assert_eq!(index.get_point(point.id).await.expect("get"), None);
}

/// The declared fields the checks below use (the same in every scope: declaring is idempotent).
fn declared() -> Fields {
    [
        ("brand".to_string(), FieldKind::Keyword),
        ("price".to_string(), FieldKind::Number),
        ("in_stock".to_string(), FieldKind::Bool),
    ]
    .into()
}

/// Declared metadata fields filter like `lookalike_core::fields` says they match: keyword any-of
/// (a list matching by any of its values), number equality and ranges, bool; several conditions
/// all hold; a value of the wrong kind or none never matches. Exact and graph search agree.
pub async fn field_filters(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("fields");
    let declared = declared();
    let as_pairs: Vec<(String, FieldKind)> =
        declared.iter().map(|(n, k)| (n.clone(), *k)).collect();
    index.index_fields(&as_pairs).await.expect("index fields");
    let metadata = [
        serde_json::json!({"brand": "acme", "price": 100, "in_stock": true}),
        serde_json::json!({"brand": "zeta", "price": 250.5, "in_stock": false}),
        serde_json::json!({"brand": ["acme", "zeta"], "price": 50, "in_stock": true}),
        serde_json::json!({"brand": "acme", "price": "cheap"}),
        serde_json::json!({}),
    ];
    let mut points = s.points(metadata.len() + 1, Some(&cat));
    for (p, m) in points.iter_mut().zip(&metadata) {
        p.attrs = Some(serde_json::json!({"external_id": null, "metadata": m}));
    }
    upsert(index, &points).await;
    // Declaring again, with the points in place, is harmless and covers them.
    index
        .index_fields(&as_pairs)
        .await
        .expect("index fields again");

    // (query parameters, the points that must match them)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [usize]);
    let cases: &[Case] = &[
        (&[("brand", "acme")], &[0, 2, 3]),
        (&[("brand", "acme"), ("brand", "zeta")], &[0, 1, 2, 3]),
        (&[("price_lt", "100")], &[2]),
        (&[("price_gte", "100")], &[0, 1]),
        (&[("price", "100")], &[0]),
        (&[("price_gt", "50"), ("price_lte", "250.5")], &[0, 1]),
        (&[("in_stock", "true")], &[0, 2]),
        (&[("in_stock", "false")], &[1]),
        (&[("in_stock", "true"), ("in_stock", "false")], &[0, 1, 2]),
        (&[("brand", "acme"), ("price_lt", "200")], &[0, 2]),
        (&[("brand", "nobody")], &[]),
    ];
    for (query, expected) in cases {
        let conditions = parse_query(query.iter().copied(), &declared, &[]).expect("valid filter");
        let by_rule: HashSet<Uuid> = points
            .iter()
            .zip(
                metadata
                    .iter()
                    .chain(std::iter::once(&serde_json::Value::Null)),
            )
            .filter(|(_, m)| conditions.iter().all(|c| c.matches(m)))
            .map(|(p, _)| p.id)
            .collect();
        let wanted: HashSet<Uuid> = expected.iter().map(|i| points[*i].id).collect();
        assert_eq!(by_rule, wanted, "the rule itself, for {query:?}");
        for exact in [false, true] {
            let req = SearchRequest {
                filter: CategoryFilter::One(cat.clone()),
                fields: conditions.clone(),
                exact,
                ..s.query(&points[0].vector, 10)
            };
            let got: HashSet<Uuid> = ids(&search(index, req).await).into_iter().collect();
            assert_eq!(got, wanted, "{query:?} (exact: {exact})");
        }
    }
    index
        .delete(&points.iter().map(|p| p.id).collect::<Vec<_>>())
        .await
        .expect("delete");
}

/// `set_attrs` replaces a point's attrs (and so what its fields filter on) and nothing else.
pub async fn set_attrs(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("set-attrs");
    let declared = declared();
    let as_pairs: Vec<(String, FieldKind)> =
        declared.iter().map(|(n, k)| (n.clone(), *k)).collect();
    index.index_fields(&as_pairs).await.expect("index fields");
    let mut point = s.point(Some(&cat));
    point.attrs = Some(serde_json::json!({"external_id": "x", "metadata": {"brand": "zeta"}}));
    upsert(index, std::slice::from_ref(&point)).await;
    let acme = parse_query([("brand", "acme")], &declared, &[]).expect("valid");
    let filtered = |fields| SearchRequest {
        filter: CategoryFilter::One(cat.clone()),
        fields,
        ..s.query(&point.vector, 10)
    };
    assert!(search(index, filtered(acme.clone())).await.is_empty());

    let attrs = serde_json::json!({"external_id": "x", "metadata": {"brand": "acme", "price": 3}});
    index
        .set_attrs(point.id, attrs.clone())
        .await
        .expect("set_attrs");
    assert_eq!(ids(&search(index, filtered(acme)).await), vec![point.id]);
    let stored = index
        .get_point(point.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(stored.attrs, Some(attrs));
    assert_eq!(stored.category.as_deref(), Some(cat.as_str()));
    assert_eq!(stored.model_id.as_deref(), Some(s.model.as_str()));
    assert!(cosine(&stored.vector, &point.vector) > 0.9999);

    let missing = Uuid::new_v4();
    let err = index
        .set_attrs(missing, serde_json::json!({}))
        .await
        .expect_err("no such point");
    assert!(
        matches!(err, IndexError::NotFound(id) if id == missing),
        "{err:?}"
    );
    index.delete(&[point.id]).await.expect("delete");
}

/// A recommendation ranks like the best-score rule says, computed here from the vectors: with
/// `s(x) = (x / (1 + |x|) + 1) / 2`, a candidate nearer to some positive than to every negative
/// scores `s(best cosine to a positive)`, in (0, 1); any other `-s(best cosine to a negative)`.
/// Its examples never appear.
pub async fn recommend_best_score(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("recommend");
    let mut points = s.points(12, Some(&cat));
    // Two near-copies of the first positive and one of the negative, so every rank is exercised.
    let near =
        |s: &mut Scope, v: &[f32]| -> Vec<f32> { v.iter().map(|x| x + 0.2 * s.next()).collect() };
    points[3].vector = near(&mut s, &points[0].vector);
    points[4].vector = near(&mut s, &points[0].vector);
    points[5].vector = near(&mut s, &points[2].vector);
    upsert(index, &points).await;
    let positive = [&points[0], &points[1]];
    let negative = [&points[2]];
    let best = |v: &[f32], examples: &[&Point]| {
        examples
            .iter()
            .map(|p| cosine(v, &p.vector))
            .fold(f32::MIN, f32::max)
    };
    let mut expected: Vec<(f32, Uuid)> = points[3..]
        .iter()
        .map(|p| {
            let (pos, neg) = (best(&p.vector, &positive), best(&p.vector, &negative));
            let s = |x: f32| 0.5 * (x / (1.0 + x.abs()) + 1.0);
            (if pos > neg { s(pos) } else { -s(neg) }, p.id)
        })
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));
    for exact in [true, false] {
        let req = SearchRequest {
            filter: CategoryFilter::One(cat.clone()),
            model_id: Some(s.model.clone()),
            exclude: [&points[0], &points[1], &points[2]]
                .iter()
                .map(|p| p.id)
                .collect(),
            exact,
            ..SearchRequest::recommend(
                positive.iter().map(|p| p.vector.clone()).collect(),
                negative.iter().map(|p| p.vector.clone()).collect(),
                20,
            )
        };
        let hits = search(index, req).await;
        assert_eq!(
            ids(&hits),
            expected.iter().map(|e| e.1).collect::<Vec<_>>(),
            "best-score order (exact: {exact})"
        );
        for (hit, (score, _)) in hits.iter().zip(&expected) {
            assert!((hit.score - score).abs() < 1e-3, "{} vs {score}", hit.score);
        }
        assert!(
            hits.last().unwrap().score < 0.0,
            "the negative's copy ranks last, below zero"
        );
    }
    let err = index
        .search(SearchRequest::recommend(
            Vec::new(),
            vec![points[2].vector.clone()],
            5,
        ))
        .await
        .expect_err("no positive");
    assert!(matches!(err, IndexError::Invalid(_)), "{err:?}");
}

/// Groups as (key, hit ids), for comparing whole answers.
type Shape = Vec<(Option<String>, Vec<Uuid>)>;

fn shape(groups: &[Group]) -> Shape {
    groups
        .iter()
        .map(|g| (g.key.clone(), ids(&g.hits)))
        .collect()
}

/// The expected shape, from (key, points) pairs.
fn expect(groups: &[(Option<&str>, &[&Point])]) -> Shape {
    groups
        .iter()
        .map(|(key, points)| {
            (
                key.map(str::to_owned),
                points.iter().map(|p| p.id).collect(),
            )
        })
        .collect()
}

async fn search_groups(
    index: &dyn VectorIndex,
    req: SearchRequest,
    by: GroupBy,
    per_group: usize,
) -> Vec<Group> {
    index
        .search_groups(req, by, per_group)
        .await
        .expect("search_groups")
}

/// What every grouped answer must look like: no empty group, a keyless group of one hit, hits
/// best first within a group, groups ordered by their best hit, no point twice.
fn assert_well_formed(groups: &[Group], per_group: usize) {
    let mut seen = HashSet::new();
    for g in groups {
        assert!(!g.hits.is_empty() && g.hits.len() <= per_group, "{g:?}");
        if g.key.is_none() {
            assert_eq!(
                g.hits.len(),
                1,
                "a point without a key is a group of its own"
            );
        }
        assert!(g.hits.windows(2).all(|w| w[0].score >= w[1].score), "{g:?}");
        assert!(g.hits.iter().all(|h| seen.insert(h.id)), "a point twice");
    }
    assert!(
        groups
            .windows(2)
            .all(|w| w[0].hits[0].score >= w[1].hits[0].score),
        "groups ordered by their best hit"
    );
}

/// One result per product: `per_group` caps each product's hits, `limit` counts groups, points
/// without a product (no key, or null) are groups of their own, and groups rank by their best
/// hit, interleaved with the keyless points by score.
pub async fn grouped_by_product(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("grouped");
    let q = s.vector();
    let (a, b, c) = (s.cat("product-a"), s.cat("product-b"), s.cat("product-c"));
    let mut at = |sim: f32, key: Option<&str>| {
        let keys: Vec<(GroupBy, Option<&str>)> = match key {
            Some(k) => vec![(GroupBy::Product, Some(k))],
            None => Vec::new(),
        };
        s.member(&cat, &q, sim, &keys)
    };
    let (a1, a2, a3) = (at(0.95, Some(&a)), at(0.80, Some(&a)), at(0.60, Some(&a)));
    let (b1, b2) = (at(0.90, Some(&b)), at(0.50, Some(&b)));
    let c1 = at(0.70, Some(&c));
    let bare = at(0.55, None); // no attrs at all
    let null = s.member(&cat, &q, 0.85, &[(GroupBy::Product, None)]); // product_id: null
    let points = [&a1, &a2, &a3, &b1, &b2, &c1, &bare, &null];
    upsert(index, &points.map(Point::clone)).await;
    let req = |limit: usize, exact: bool| SearchRequest {
        filter: CategoryFilter::One(cat.clone()),
        exact,
        ..s.query(&q, limit)
    };

    for exact in [true, false] {
        let groups = search_groups(index, req(10, exact), GroupBy::Product, 2).await;
        assert_well_formed(&groups, 2);
        assert_eq!(
            shape(&groups),
            expect(&[
                (Some(&a), &[&a1, &a2]),
                (Some(&b), &[&b1, &b2]),
                (None, &[&null]),
                (Some(&c), &[&c1]),
                (None, &[&bare]),
            ]),
            "per_group 2 (exact: {exact})"
        );
        for g in &groups {
            for h in &g.hits {
                let p = points.iter().find(|p| p.id == h.id).expect("one of ours");
                assert!((h.score - cosine(&q, &p.vector)).abs() < 1e-3);
                assert_eq!(h.category.as_deref(), Some(cat.as_str()));
                assert_eq!(h.attrs, p.attrs, "hits carry their attrs");
            }
        }
    }
    let one = search_groups(index, req(10, true), GroupBy::Product, 1).await;
    assert_eq!(
        shape(&one),
        expect(&[
            (Some(&a), &[&a1]),
            (Some(&b), &[&b1]),
            (None, &[&null]),
            (Some(&c), &[&c1]),
            (None, &[&bare]),
        ]),
        "one result per product"
    );
    let top = search_groups(index, req(3, true), GroupBy::Product, 3).await;
    assert_eq!(
        shape(&top),
        expect(&[
            (Some(&a), &[&a1, &a2, &a3]),
            (Some(&b), &[&b1, &b2]),
            (None, &[&null]),
        ]),
        "the limit counts groups, not hits"
    );

    assert!(
        search_groups(index, req(0, true), GroupBy::Product, 1)
            .await
            .is_empty()
    );
    let none = SearchRequest {
        filter: CategoryFilter::AnyOf(Vec::new()),
        ..req(10, true)
    };
    assert!(
        search_groups(index, none, GroupBy::Product, 1)
            .await
            .is_empty()
    );
    for per_group in [0, crate::MAX_PER_GROUP + 1, usize::MAX] {
        let err = index
            .search_groups(req(10, true), GroupBy::Product, per_group)
            .await
            .expect_err("per_group out of range");
        assert!(matches!(err, IndexError::Invalid(_)), "{err:?}");
    }
    let most = search_groups(index, req(10, true), GroupBy::Product, crate::MAX_PER_GROUP).await;
    assert_eq!(most.len(), 5);
    let mut wrong = req(10, true);
    wrong.vector.push(0.5);
    let err = index
        .search_groups(wrong, GroupBy::Product, 1)
        .await
        .expect_err("dim + 1");
    assert!(matches!(err, IndexError::Invalid(_)), "{err:?}");
    // Grouping changes nothing about a plain search.
    assert_eq!(search(index, req(20, true)).await.len(), points.len());
}

/// Equal scores (copies of one image) go by id, as in a search: inside a group, at the
/// `per_group` cut, and between groups whose best hits tie.
pub async fn grouped_ties(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("grouped-ties");
    let q = s.vector();
    let (a, b) = (s.cat("product-a"), s.cat("product-b"));
    let copies = |template: &Point, n: usize| -> Vec<Point> {
        (0..n)
            .map(|_| Point {
                id: Uuid::new_v4(),
                ..template.clone()
            })
            .collect()
    };
    let a_top = s.member(&cat, &q, 0.9, &[(GroupBy::Product, Some(&a))]);
    let a_copy = s.member(&cat, &q, 0.8, &[(GroupBy::Product, Some(&a))]);
    let mut in_a = copies(&a_copy, 4);
    in_a.push(a_top.clone());
    // Product b's best image is a copy of a's best: the two groups tie.
    let mut b_best = copies(&a_top, 2);
    for p in &mut b_best {
        p.attrs = Some(serde_json::json!({"external_id": null, "product_id": b}));
    }
    let loose = copies(&s.member(&cat, &q, 0.7, &[]), 3);
    upsert(
        index,
        &[in_a.clone(), b_best.clone(), loose.clone()].concat(),
    )
    .await;

    let by_id = |points: &[Point]| -> Vec<Point> {
        let mut sorted = points.to_vec();
        sorted.sort_by_key(|p| p.id);
        sorted
    };
    let a_copies = by_id(&in_a[..4]);
    let b_sorted = by_id(&b_best);
    let loose = by_id(&loose);
    // The tie between the groups' best hits goes by id too.
    let (first, second) = if a_top.id < b_sorted[0].id {
        (a.as_str(), b.as_str())
    } else {
        (b.as_str(), a.as_str())
    };
    let req = SearchRequest {
        filter: CategoryFilter::One(cat.clone()),
        exact: true,
        ..s.query(&q, 10)
    };
    for per_group in [1, 2, 3] {
        let groups = search_groups(index, req.clone(), GroupBy::Product, per_group).await;
        assert_well_formed(&groups, per_group);
        let best_of = |key: &str| -> Vec<Uuid> {
            let ranked: Vec<&Point> = if key == a {
                std::iter::once(&a_top).chain(&a_copies).collect()
            } else {
                b_sorted.iter().collect()
            };
            ranked.iter().take(per_group).map(|p| p.id).collect()
        };
        let mut expected: Shape = vec![
            (Some(first.to_owned()), best_of(first)),
            (Some(second.to_owned()), best_of(second)),
        ];
        expected.extend(loose.iter().map(|p| (None, vec![p.id])));
        assert_eq!(shape(&groups), expected, "per_group {per_group}");
    }
}

/// Filters, exclusions, the model and `min_score` pick the points before they are grouped: a
/// product whose best image is left out is represented by its next one, and a product with no
/// image left does not appear. A recommendation groups the same way.
pub async fn grouped_with_filters(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let (x, y) = (s.cat("grouped-x"), s.cat("grouped-y"));
    let q = s.vector();
    let (a, b) = (s.cat("product-a"), s.cat("product-b"));
    let pa = [(GroupBy::Product, Some(a.as_str()))];
    let pb = [(GroupBy::Product, Some(b.as_str()))];
    let a1 = s.member(&x, &q, 0.95, &pa);
    let a2 = s.member(&x, &q, 0.85, &pa);
    let a3 = s.member(&y, &q, 0.75, &pa);
    let b1 = s.member(&y, &q, 0.90, &pb);
    let b2 = s.member(&x, &q, 0.70, &pb);
    let n1 = s.member(&x, &q, 0.80, &[(GroupBy::Product, None)]);
    // The best of all, but another model's vector: never a result.
    let other_model = Point {
        model_id: format!("other-{}", s.model),
        ..s.member(&x, &q, 0.99, &pa)
    };
    upsert(
        index,
        &[&a1, &a2, &a3, &b1, &b2, &n1, &other_model].map(Point::clone),
    )
    .await;
    let both = CategoryFilter::AnyOf(vec![x.clone(), y.clone()]);
    let base = SearchRequest {
        exact: true,
        ..s.query(&q, 10)
    };

    let in_x = SearchRequest {
        filter: CategoryFilter::One(x.clone()),
        ..base.clone()
    };
    assert_eq!(
        shape(&search_groups(index, in_x, GroupBy::Product, 2).await),
        expect(&[(Some(&a), &[&a1, &a2]), (None, &[&n1]), (Some(&b), &[&b2]),]),
        "category filter"
    );

    let without_a1 = SearchRequest {
        filter: both.clone(),
        exclude: vec![a1.id],
        ..base.clone()
    };
    assert_eq!(
        shape(&search_groups(index, without_a1, GroupBy::Product, 2).await),
        expect(&[
            (Some(&b), &[&b1, &b2]),
            (Some(&a), &[&a2, &a3]),
            (None, &[&n1]),
        ]),
        "a product whose best image is excluded ranks by its next one"
    );

    let without_b = SearchRequest {
        filter: both.clone(),
        exclude: vec![b1.id, b2.id, n1.id],
        ..base.clone()
    };
    assert_eq!(
        shape(&search_groups(index, without_b, GroupBy::Product, 1).await),
        expect(&[(Some(&a), &[&a1])]),
        "no image left, no group"
    );

    let above = SearchRequest {
        filter: both.clone(),
        min_score: Some(0.78),
        ..base.clone()
    };
    assert_eq!(
        shape(&search_groups(index, above, GroupBy::Product, 3).await),
        expect(&[(Some(&a), &[&a1, &a2]), (Some(&b), &[&b1]), (None, &[&n1]),]),
        "min_score"
    );

    // A recommendation from the query vector alone ranks like the nearest search (its score is
    // monotonic in the similarity), so it groups the same.
    let recommend = SearchRequest {
        filter: both.clone(),
        model_id: Some(s.model.clone()),
        exact: true,
        ..SearchRequest::recommend(vec![q.clone()], Vec::new(), 10)
    };
    let nearest = SearchRequest {
        filter: both,
        ..base
    };
    let recommended = search_groups(index, recommend, GroupBy::Product, 2).await;
    assert_eq!(
        shape(&recommended),
        shape(&search_groups(index, nearest, GroupBy::Product, 2).await)
    );
    assert_eq!(recommended.len(), 3);
}

/// `offset` skips groups: pages of groups line up with one long answer, never overlapping.
pub async fn grouped_paging(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("grouped-paging");
    let q = s.vector();
    let products: Vec<String> = (0..6).map(|i| s.cat(&format!("product-{i}"))).collect();
    let mut points = Vec::new();
    // 14 points at distinct similarities: two images of each product, interleaved, and two
    // points without a product.
    let mut keyed = 0;
    for i in 0..14 {
        let sim = 0.9 - 0.04 * i as f32;
        let key = match i {
            4 | 11 => None,
            _ => {
                keyed += 1;
                Some(products[(keyed - 1) % 6].as_str())
            }
        };
        points.push(s.member(&cat, &q, sim, &[(GroupBy::Product, key)]));
    }
    upsert(index, &points).await;
    let req = |offset: usize, limit: usize| SearchRequest {
        filter: CategoryFilter::One(cat.clone()),
        offset,
        exact: true,
        ..s.query(&q, limit)
    };
    for per_group in [1, 2] {
        let full = search_groups(index, req(0, 100), GroupBy::Product, per_group).await;
        assert_well_formed(&full, per_group);
        assert_eq!(full.len(), 8, "six products and two points without one");
        let mut paged = Vec::new();
        for offset in [0, 3, 6] {
            let page = search_groups(index, req(offset, 3), GroupBy::Product, per_group).await;
            assert!(page.len() <= 3);
            paged.extend(page);
        }
        assert_eq!(shape(&paged), shape(&full), "per_group {per_group}");
        assert!(
            search_groups(index, req(8, 3), GroupBy::Product, per_group)
                .await
                .is_empty(),
            "past the last group"
        );
    }
}

/// Grouping by duplicate group works like grouping by product, on its own key: the same points
/// group differently by each.
pub async fn grouped_duplicate_key(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("grouped-dups");
    let q = s.vector();
    let (a, b) = (s.cat("product-a"), s.cat("product-b"));
    let (d1, d2) = (s.cat("dup-1"), s.cat("dup-2"));
    let keys = |product: &str, dup: Option<&str>| {
        [
            (GroupBy::Product, Some(product.to_owned())),
            (GroupBy::Duplicate, dup.map(str::to_owned)),
        ]
    };
    let mut make = |sim: f32, product: &str, dup: Option<&str>| {
        let owned = keys(product, dup);
        let keys: Vec<(GroupBy, Option<&str>)> =
            owned.iter().map(|(by, v)| (*by, v.as_deref())).collect();
        s.member(&cat, &q, sim, &keys)
    };
    // The same photo sold as two products (dup-1), a product's two near-identical shots (dup-2),
    // and an image that has no duplicate.
    let p1 = make(0.95, &a, Some(&d1));
    let p2 = make(0.93, &b, Some(&d1));
    let p3 = make(0.80, &a, Some(&d2));
    let p4 = make(0.78, &a, Some(&d2));
    let p5 = make(0.60, &b, None);
    upsert(index, &[&p1, &p2, &p3, &p4, &p5].map(Point::clone)).await;
    let req = SearchRequest {
        filter: CategoryFilter::One(cat.clone()),
        exact: true,
        ..s.query(&q, 10)
    };
    let by_dup = search_groups(index, req.clone(), GroupBy::Duplicate, 5).await;
    assert_well_formed(&by_dup, 5);
    assert_eq!(
        shape(&by_dup),
        expect(&[
            (Some(&d1), &[&p1, &p2]),
            (Some(&d2), &[&p3, &p4]),
            (None, &[&p5]),
        ])
    );
    let by_product = search_groups(index, req.clone(), GroupBy::Product, 5).await;
    assert_eq!(
        shape(&by_product),
        expect(&[(Some(&a), &[&p1, &p3, &p4]), (Some(&b), &[&p2, &p5])])
    );
    let one_each = search_groups(index, req, GroupBy::Duplicate, 1).await;
    assert_eq!(
        shape(&one_each),
        expect(&[(Some(&d1), &[&p1]), (Some(&d2), &[&p3]), (None, &[&p5])])
    );
}

/// A few products owning many images nearer to the query than any other product's: the answer
/// still holds as many groups as asked for, in order (the engine's own grouping gives up after
/// a fixed number of rounds; the embedded backend's first fetch sees only three products).
pub async fn grouped_crowded_products(index: &dyn VectorIndex, dim: usize) {
    let mut s = Scope::new(dim);
    let cat = s.cat("grouped-crowded");
    let q = s.vector();
    let (products, images) = (12, 30);
    let names: Vec<String> = (0..products)
        .map(|k| s.cat(&format!("product-{k}")))
        .collect();
    let mut points = Vec::new();
    for (k, name) in names.iter().enumerate() {
        for j in 0..images {
            // Each product's images in a band of their own, below the previous product's.
            let sim = 0.95 - 0.06 * k as f32 - 0.001 * j as f32;
            points.push(s.member(&cat, &q, sim, &[(GroupBy::Product, Some(name))]));
        }
    }
    upsert(index, &points).await;
    let req = |offset: usize, limit: usize| SearchRequest {
        filter: CategoryFilter::One(cat.clone()),
        offset,
        exact: true,
        ..s.query(&q, limit)
    };
    for per_group in [1, 2] {
        let groups = search_groups(index, req(0, 10), GroupBy::Product, per_group).await;
        assert_well_formed(&groups, per_group);
        let expected: Shape = (0..10)
            .map(|k| {
                (
                    Some(names[k].clone()),
                    (0..per_group).map(|j| points[k * images + j].id).collect(),
                )
            })
            .collect();
        assert_eq!(shape(&groups), expected, "per_group {per_group}");
    }
    let last = search_groups(index, req(10, 10), GroupBy::Product, 1).await;
    assert_eq!(
        last.iter().map(|g| g.key.clone()).collect::<Vec<_>>(),
        vec![Some(names[10].clone()), Some(names[11].clone())]
    );
}
