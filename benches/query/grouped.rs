//! Grouped similarity at catalogue scale: one result per product (`group=product`) and per
//! near-duplicate group (`collapse=true`) against the plain filtered top-10 they stand in for. Each
//! query item is asked all three ways, one after the other, on the embedded index in process, on a
//! Qdrant server started here (lookalike's grouped search there is the server's group query), and
//! through the API, so the load of this shared machine falls on every row alike. Each answer is
//! checked against exact grouping done here (recall@10 of the group keys).

use std::collections::{BTreeMap, HashSet};

use lookalike_index::{GroupBy, QdrantIndex, ServerOptions};

use super::*;

/// Images counted per group, as the API asks (`MATCHED_PER_PRODUCT`).
const PER_GROUP: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Query {
    Plain,
    Product,
    Duplicate,
}

impl Query {
    const ALL: [Query; 3] = [Query::Plain, Query::Product, Query::Duplicate];

    fn name(self) -> &'static str {
        match self {
            Query::Plain => "plain top-10",
            Query::Product => "group=product",
            Query::Duplicate => "collapse=true",
        }
    }

    fn by(self) -> Option<GroupBy> {
        match self {
            Query::Plain => None,
            Query::Product => Some(GroupBy::Product),
            Query::Duplicate => Some(GroupBy::Duplicate),
        }
    }

    fn api_param(self) -> &'static str {
        match self {
            Query::Plain => "",
            Query::Product => "&group=product",
            Query::Duplicate => "&collapse=true",
        }
    }
}

/// What the API leaves out for item `i`: the item, and for a grouped query the other members of
/// its product or duplicate group.
fn excluded(cat: &Catalogue, i: usize, q: Query) -> Vec<usize> {
    let mut out = vec![i];
    match q {
        Query::Plain => {}
        Query::Product => out.extend(
            cat.products[cat.product[i] as usize]
                .iter()
                .map(|&j| j as usize),
        ),
        Query::Duplicate => {
            if let Some(g) = cat.duplicate_group[i] {
                out.extend(cat.duplicates[&g].iter().map(|&j| j as usize));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The key an answer is judged by: the item itself, its product, or its duplicate group (an item
/// in none is a group of its own).
fn key(cat: &Catalogue, j: usize, q: Query) -> String {
    match q {
        Query::Plain => cat.ids[j].to_string(),
        Query::Product => cat.product_id(j),
        Query::Duplicate => cat.duplicate_group[j].unwrap_or(cat.ids[j]).to_string(),
    }
}

/// The exact answer: the best [`K`] keys within item `i`'s category, ranked by their best item.
fn exact(cat: &Catalogue, i: usize, q: Query, left_out: &[usize]) -> Vec<String> {
    let v = cat.vector(i);
    let mut scored: Vec<(f32, usize)> = cat.members[cat.category[i] as usize]
        .iter()
        .map(|&j| j as usize)
        .filter(|j| left_out.binary_search(j).is_err())
        .map(|j| (dot(v, cat.vector(j)), j))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut seen = HashSet::new();
    scored
        .into_iter()
        .map(|(_, j)| key(cat, j, q))
        .filter(|k| seen.insert(k.clone()))
        .take(K)
        .collect()
}

/// A Qdrant server of the benchmark's own with the catalogue's points, its HNSW graphs built.
pub(super) struct Server {
    _process: support::qdrant::PrivateQdrant,
    pub(super) index: QdrantIndex,
    pub(super) build: Value,
}

pub(super) async fn load_server(cat: &Catalogue, model_id: &str) -> anyhow::Result<Server> {
    let process = support::qdrant::PrivateQdrant::start().await.context(
        "the query benchmark compares against a Qdrant server: no server binary at \
         ../shared/bin/qdrant (set LOOKALIKE_QDRANT_BIN)",
    )?;
    let index = QdrantIndex::connect(ServerOptions::new(process.url(), "bench", cat.dim)).await?;
    let t = Instant::now();
    for chunk in (0..cat.len()).collect::<Vec<_>>().chunks(1000) {
        index
            .upsert(chunk.iter().map(|&i| point(cat, i, model_id)).collect())
            .await?;
    }
    let fields: Vec<_> = declared_fields().into_iter().collect();
    index.index_fields(&fields).await?;
    let upsert_secs = t.elapsed().as_secs_f64();
    // The server builds its graphs in the background; measure once it says it is done.
    let t = Instant::now();
    let http = reqwest::Client::new();
    let url = format!("{}/collections/{}", process.http_url(), index.collection());
    // Green for three polls in a row (the optimizer may not have started at the first), and at
    // 100,000 points most vectors in a graph (a small catalogue's segments may stay unindexed).
    let mut green = 0;
    let info = loop {
        let body: Value = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let r = &body["result"];
        let indexed = r["indexed_vectors_count"].as_u64().unwrap_or(0) as f64;
        let points = r["points_count"].as_u64().unwrap_or(0) as f64;
        green = if r["status"] == "green" && r["optimizer_status"] == "ok" {
            green + 1
        } else {
            0
        };
        if green >= 3 && (points < 20_000.0 || indexed >= 0.9 * points) {
            break r.clone();
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(900),
            "the Qdrant server did not finish indexing in 15 minutes: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let build = json!({
        "upsert_s": upsert_secs,
        "indexing_wait_s": t.elapsed().as_secs_f64(),
        "points": info["points_count"],
        "indexed_vectors": info["indexed_vectors_count"],
        "segments": info["segments_count"],
    });
    println!("qdrant server: {build}");
    Ok(Server {
        _process: process,
        index,
        build,
    })
}

#[derive(Default)]
struct Row {
    ms: Vec<f64>,
    found: usize,
    expected: usize,
    results: usize,
}

/// Every query item asked the three ways on each backend and through the API.
pub(super) async fn measure(
    cat: &Catalogue,
    edge: &EdgeIndex,
    server: &Server,
    client: &reqwest::Client,
    base: &str,
    queries: &[usize],
    model_id: &str,
) -> anyhow::Result<Value> {
    let position: HashMap<Uuid, usize> =
        cat.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let backends: [(&'static str, &dyn VectorIndex); 2] =
        [("embedded", edge), ("server", &server.index)];
    let mut rows: BTreeMap<(&str, Query), Row> = BTreeMap::new();
    let mut record =
        |backend: &'static str, q: Query, ms: f64, answer: &[String], truth: &[String]| {
            let row = rows.entry((backend, q)).or_default();
            row.ms.push(ms);
            row.expected += truth.len();
            row.found += answer.iter().filter(|k| truth.contains(k)).count();
            row.results += answer.len();
        };
    let at = |id: &Uuid| {
        position
            .get(id)
            .copied()
            .context("an answer outside the catalogue")
    };
    for &i in queries {
        for q in Query::ALL {
            let left_out = excluded(cat, i, q);
            let truth = exact(cat, i, q, &left_out);
            for (name, index) in backends {
                let request = SearchRequest {
                    exclude: left_out.iter().map(|&j| cat.ids[j]).collect(),
                    ..similar_request(cat, i, model_id)
                };
                let t = Instant::now();
                let best: Vec<Uuid> = match q.by() {
                    None => index.search(request).await?.iter().map(|h| h.id).collect(),
                    Some(by) => index
                        .search_groups(request, by, PER_GROUP)
                        .await?
                        .iter()
                        .map(|g| g.hits[0].id)
                        .collect(),
                };
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let answer = best
                    .iter()
                    .map(|id| Ok(key(cat, at(id)?, q)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                record(name, q, ms, &answer, &truth);
            }
            let url = format!(
                "{base}/v1/items/{}/similar?k={K}{}",
                cat.ids[i],
                q.api_param()
            );
            let (ids, ms) = similar_ids(client, url).await?;
            let answer = ids
                .iter()
                .map(|id| Ok(key(cat, at(id)?, q)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            record("api", q, ms, &answer, &truth);
        }
    }
    let p50_of = |backend: &str, q: Query| p50(&rows[&(backend, q)].ms);
    let mut out = Vec::new();
    for ((backend, q), row) in &rows {
        let mut sorted = row.ms.clone();
        sorted.sort_by(f64::total_cmp);
        out.push(json!({
            "backend": backend,
            "query": q.name(),
            "queries": row.ms.len(),
            "p50_ms": percentile(&sorted, 0.5),
            "p99_ms": percentile(&sorted, 0.99),
            "mean_ms": sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
            "recall_at_10": row.found as f64 / row.expected.max(1) as f64,
            "results_mean": row.results as f64 / row.ms.len().max(1) as f64,
            "p50_over_plain": percentile(&sorted, 0.5) / p50_of(backend, Query::Plain),
        }));
    }
    Ok(json!({
        "per_group": PER_GROUP,
        "catalogue": {
            "products": cat.products.len(),
            "items_in_multi_image_products": cat.products.iter().filter(|p| p.len() > 1).map(Vec::len).sum::<usize>(),
            "duplicate_groups": cat.duplicates.len(),
            "items_in_duplicate_groups": cat.duplicates.values().map(Vec::len).sum::<usize>(),
        },
        "server_build": server.build,
        "rows": out,
    }))
}
