//! The web page, end to end: the real service (Postgres, RabbitMQ, model) and the page served at `/`,
//! driven in headless Chromium through chromedriver (install both with `scripts/browser.sh`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const JOB_LIMIT: Duration = Duration::from_secs(120);
const UI_LIMIT: Duration = Duration::from_secs(30);

/// chromedriver on a free port, in its own process group so that dropping it also ends the Chromium
/// processes it started (even when the test fails half-way).
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
    profile_dir: PathBuf,
}

impl Driver {
    async fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/browser.sh to install Chromium and chromedriver"
            );
        }
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let profile_dir = profile.path().to_path_buf();
        let log = std::fs::File::create(profile_dir.join("chromedriver.log")).unwrap();
        let mut cmd = Command::new(CHROMEDRIVER);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile_dir: profile_dir.join("chromium"),
            _profile: profile,
        };
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/status", driver.url)).send().await
                && r.status().is_success()
            {
                return driver;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on {}",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn browser(&self) -> Client {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--window-size=1280,1000",
                    format!("--user-data-dir={}", self.profile_dir.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("starting headless Chromium through chromedriver: {e}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser it launched.
        let group = -(self.child.id() as i32);
        unsafe { libc::kill(group, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Runs `script` (a function body that returns a value) until it returns something truthy; fails
/// at once when the page shows an error, with the error's text.
async fn poll(page: &Client, service: &Service, what: &str, script: &str) -> Value {
    let start = Instant::now();
    loop {
        let value = page.execute(script, vec![]).await.unwrap();
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        let error = page
            .execute("const e = document.getElementById('error'); return e.hidden ? null : e.textContent;", vec![])
            .await
            .unwrap();
        assert!(
            error.is_null(),
            "waiting for {what}, the page shows an error: {error}\nservice log:\n{}",
            tail(&service.log())
        );
        assert!(
            start.elapsed() < UI_LIMIT,
            "{what}: not seen within {UI_LIMIT:?}\nservice log:\n{}",
            tail(&service.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(4000)..]
}

/// `[[item_id, category], ...]` of the results grid, or of the catalogue grid.
const RESULTS: &str = "return [...document.querySelectorAll('#results .result')].map(e => [e.dataset.itemId, e.dataset.category]);";

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("LOOKALIKE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(page: &Client, name: &str) -> PathBuf {
    let path = artifacts_dir().join(name);
    std::fs::write(&path, page.screenshot().await.unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_searches_by_image_and_shows_same_category_lookalikes_jobs_and_catalogue() {
    // Fail first, and clearly, when there is no browser: never pass silently.
    let driver = Driver::start().await;

    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;

    // A small labelled catalogue: three of each category (query strings make distinct URLs).
    let mut items = Vec::new();
    for (i, (file, category)) in [
        ("allstar-sneakers.jpg?copy=1", "shoes"),
        ("allstar-sneakers.jpg?copy=2", "shoes"),
        ("sneakers_01__1.png?copy=1", "shoes"),
        ("skimage_coffee.png?copy=1", "cups"),
        ("skimage_coffee.png?copy=2", "cups"),
        ("skimage_coffee.png?copy=3", "cups"),
        ("skimage_chelsea.png?copy=1", "cats"),
        ("skimage_chelsea.png?copy=2", "cats"),
        ("skimage_chelsea.png?copy=3", "cats"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut item = json!({"url": images.url(&format!("/files/{file}")), "category": category, "external_id": format!("{category}-{}", i + 1)});
        if file.starts_with("allstar") {
            // Two images of one product: the page shows them as one result.
            item["product_id"] = json!("allstar");
        }
        items.push(item);
    }
    let ids = service.submit_urls(Value::Array(items)).await;
    let page = driver.browser().await; // the browser starts while the worker embeds
    for job in service.wait_jobs(&ids, JOB_LIMIT).await {
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    // The page and its two assets are served by the API.
    page.goto(&service.url("/")).await.unwrap();
    assert_eq!(
        page.title().await.unwrap(),
        "lookalike — find similar products"
    );
    poll(
        &page,
        &service,
        "the category filter to list the categories",
        "return document.querySelector('#category-filter option[value=\"cups\"]') !== null;",
    )
    .await;

    // 1. Search by a file: the predicted category is shoes and every lookalike is a shoe.
    let sneaker = reference_dir()
        .join("sneakers_01__1.png")
        .canonicalize()
        .unwrap();
    page.find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(sneaker.to_str().unwrap())
        .await
        .unwrap();
    let results = pairs(
        &poll(
            &page,
            &service,
            "search results for the uploaded sneaker",
            RESULTS,
        )
        .await,
    );
    let predicted = page
        .find(Locator::Id("predicted-category"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(predicted, "shoes");
    let confidence = page
        .find(Locator::Id("predicted-confidence"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        confidence.ends_with('%'),
        "confidence shown as a percentage: {confidence:?}"
    );
    assert!(
        results.iter().all(|(_, c)| c == "shoes"),
        "only shoes for a shoe: {results:?}"
    );
    // One per product (the page's default): the sneaker and the allstar product, whose card says
    // how many images it has.
    assert_eq!(results.len(), 2, "{results:?}");
    let products = page
        .execute(
            "return [...document.querySelectorAll('#results .result .product')].map(e => e.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        products,
        json!(["product allstar · 2 images, 2 matched"]),
        "the product's card"
    );
    let shot = screenshot(&page, "web-search.png").await;
    eprintln!("screenshot: {}", shot.display());

    // 2. Choosing a result searches from it (similar-by-id): the grid is redrawn for that item.
    let (first_id, _) = results[0].clone();
    page.find(Locator::Css(&format!(
        "#results .result[data-item-id='{first_id}'] button"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let script = format!(
        "const g = document.getElementById('results'); return g.dataset.query === 'item:{first_id}' && !g.hasAttribute('aria-busy');"
    );
    poll(
        &page,
        &service,
        "the grid to show items similar to the chosen result",
        &script,
    )
    .await;
    let similar = pairs(&poll(&page, &service, "similar-by-id results", RESULTS).await);
    assert!(
        similar.iter().all(|(_, c)| c == "shoes"),
        "a shoe's lookalikes are shoes: {similar:?}"
    );

    // 3. The category filter re-runs the last search within the chosen category.
    page.find(Locator::Id("category-filter"))
        .await
        .unwrap()
        .select_by_value("cups")
        .await
        .unwrap();
    let cups = pairs(
        &poll(
            &page,
            &service,
            "results within cups",
            "const r = [...document.querySelectorAll('#results .result')]; \
             return r.length && r.every(e => e.dataset.category === 'cups') && !document.getElementById('results').hasAttribute('aria-busy') \
               ? r.map(e => [e.dataset.itemId, e.dataset.category]) : null;",
        )
        .await,
    );
    assert_eq!(cups.len(), 3, "the three cups: {cups:?}");
    page.find(Locator::Id("category-filter"))
        .await
        .unwrap()
        .select_by_value("auto")
        .await
        .unwrap();

    // 4. An API error is shown readably (an image URL that answers 404).
    let url = page.find(Locator::Id("url")).await.unwrap();
    url.send_keys(&images.url("/missing.jpg")).await.unwrap();
    page.find(Locator::Id("search-url"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let start = Instant::now();
    let error = loop {
        let e = page.execute("const e = document.getElementById('error'); return e.hidden ? null : e.textContent;", vec![]).await.unwrap();
        if let Some(text) = e.as_str() {
            break text.to_string();
        }
        assert!(
            start.elapsed() < UI_LIMIT,
            "no error shown for a missing image URL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.starts_with("Search failed:") && error.len() > "Search failed: ".len() + 5,
        "{error}"
    );
    page.find(Locator::Css("#error .close"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // 5. The jobs view lists the recent jobs with their status.
    page.find(Locator::Id("tab-jobs"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let jobs = poll(
        &page,
        &service,
        "the jobs table",
        "return [...document.querySelectorAll('#jobs tbody tr.job')].map(r => [r.dataset.jobId, r.dataset.status]);",
    )
    .await;
    let jobs = pairs(&jobs);
    assert_eq!(jobs.len(), ids.len(), "{jobs:?}");
    for id in &ids {
        assert!(
            jobs.contains(&(id.clone(), "succeeded".to_string())),
            "job {id} listed as succeeded: {jobs:?}"
        );
    }
    screenshot(&page, "web-jobs.png").await;

    // 6. The catalogue pages through one category's items.
    page.find(Locator::Id("tab-catalogue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page.find(Locator::Id("catalogue-category"))
        .await
        .unwrap()
        .select_by_value("cats")
        .await
        .unwrap();
    let cats = poll(
        &page,
        &service,
        "the cats in the catalogue",
        "const r = [...document.querySelectorAll('#catalogue .item')]; \
         return r.length && r.every(e => e.dataset.category === 'cats') ? r.map(e => [e.dataset.itemId, e.dataset.category]) : null;",
    )
    .await;
    assert_eq!(pairs(&cats).len(), 3, "{cats}");
    let count = page
        .find(Locator::Id("catalogue-count"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count, "1–3 of 3");
    screenshot(&page, "web-catalogue.png").await;

    page.close().await.unwrap();
}

/// The page's text in the error box, or `None` while it shows none.
async fn page_error(page: &Client) -> Option<String> {
    page.execute(
        "const e = document.getElementById('error'); return e.hidden ? null : e.textContent;",
        vec![],
    )
    .await
    .unwrap()
    .as_str()
    .map(str::to_string)
}

async fn wait_page_error(page: &Client, what: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(text) = page_error(page).await {
            return text;
        }
        assert!(start.elapsed() < UI_LIMIT, "no error shown for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn use_key(page: &Client, key: &str) {
    let input = page.find(Locator::Id("api-key")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(key).await.unwrap();
    page.find(Locator::Id("key-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_asks_for_an_api_key_keeps_it_and_loads_thumbnails_with_it() {
    let driver = Driver::start().await;
    let (page_key, ops_key) = ("lk_page_reads_only_4f1c", "lk_ops_reads_and_writes_9d2e");
    let keys = format!(
        "page:{}:read,ops:{}:read+write",
        lookalike_api::auth::key_sha256(page_key),
        lookalike_api::auth::key_sha256(ops_key)
    );
    let mut env = TestEnv::new().await;
    env.set("AUTH__ENABLED", "true").set("AUTH__KEYS", keys);
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {ops_key}").parse().unwrap(),
    );
    service.client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let ids = service
        .submit_urls(json!([
            {"url": images.url("/files/skimage_coffee.png?copy=1"), "category": "cups"},
            {"url": images.url("/files/skimage_coffee.png?copy=2"), "category": "cups"},
        ]))
        .await;
    let page = driver.browser().await;
    for job in service.wait_jobs(&ids, JOB_LIMIT).await {
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    // Without a key the page loads, and says what the API said and what to do.
    page.goto(&service.url("/")).await.unwrap();
    let error = wait_page_error(&page, "a page without a key").await;
    assert!(
        error.contains("unauthorized") && error.contains("Enter an API key"),
        "{error}"
    );

    // With the read key it works, thumbnails included (fetched with the key, shown from blobs).
    use_key(&page, page_key).await;
    poll(
        &page,
        &service,
        "the categories, read with the key",
        "return document.querySelector('#category-filter option[value=\"cups\"]') !== null;",
    )
    .await;
    // After a reload the kept key still opens the catalogue.
    page.refresh().await.unwrap();
    page.find(Locator::Id("tab-catalogue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let thumbs = poll(
        &page,
        &service,
        "the catalogue's thumbnails",
        "const imgs = [...document.querySelectorAll('#catalogue .item img')]; \
         return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.map(i => i.src) : null;",
    )
    .await;
    for src in thumbs.as_array().unwrap() {
        assert!(src.as_str().unwrap().starts_with("blob:"), "{thumbs}");
    }
    let kept = page
        .execute(
            "return [localStorage.getItem('lookalike.apiKey'), document.getElementById('api-key').value];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept, json!([page_key, page_key]));
    screenshot(&page, "web-api-key.png").await;

    // A wrong key is refused, and the page says so.
    use_key(&page, "lk_not_a_key").await;
    let error = wait_page_error(&page, "a wrong key").await;
    assert!(
        error.contains("invalid_api_key") && error.contains("Check the API key"),
        "{error}"
    );
    page.close().await.unwrap();
}

/// Two reference images side by side at one height, as a JPEG file in `dir`; the left one's share
/// of the width.
fn two_products(dir: &Path, left: &str, right: &str) -> (PathBuf, f64) {
    let load = |name: &str| {
        image::load_from_memory(&read(&reference_dir().join(name)))
            .unwrap()
            .to_rgb8()
    };
    let height = 360;
    let fit = |img: image::RgbImage| {
        let width = img.width() * height / img.height();
        image::imageops::resize(&img, width, height, image::imageops::FilterType::Lanczos3)
    };
    let (a, b) = (fit(load(left)), fit(load(right)));
    let mut photo =
        image::RgbImage::from_pixel(a.width() + b.width(), height, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut photo, &a, 0, 0);
    image::imageops::replace(&mut photo, &b, a.width() as i64, 0);
    let path = dir.join("two-products.jpg");
    photo.save(&path).unwrap();
    (path, a.width() as f64 / photo.width() as f64)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_searches_a_dragged_box_with_filters_and_more_or_less_like_this() {
    use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};

    let driver = Driver::start().await;
    let mut env = TestEnv::new().await;
    env.set("FIELDS__BRAND", "keyword");
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let mut items = Vec::new();
    for i in 0..3 {
        let brand = if i == 0 { "acme" } else { "zeta" };
        for (file, category) in [
            ("allstar-sneakers.jpg", "shoes"),
            ("sneakers_01__1.png", "shoes"),
            ("skimage_coffee.png", "cups"),
        ] {
            items.push(json!({"url": images.url(&format!("/files/{file}?copy={i}")), "category": category, "metadata": {"brand": brand}}));
        }
    }
    let ids = service.submit_urls(Value::Array(items)).await;
    let page = driver.browser().await;
    let jobs = service.wait_jobs(&ids, JOB_LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    let acme: Vec<String> = jobs[..3]
        .iter()
        .map(|j| j["item_id"].as_str().unwrap().to_string())
        .collect();
    page.goto(&service.url("/")).await.unwrap();
    poll(
        &page,
        &service,
        "the categories",
        "return document.querySelector('#category-filter option[value=\"cups\"]') !== null;",
    )
    .await;

    // 1. A photo of a shoe beside a cup; drag a box over the cup: the page searches that part.
    let dir = tempfile::tempdir().unwrap();
    let (photo, split) = two_products(dir.path(), "allstar-sneakers.jpg", "skimage_coffee.png");
    page.find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(photo.to_str().unwrap())
        .await
        .unwrap();
    poll(&page, &service, "results for the whole photo", RESULTS).await;
    let rect = poll(
        &page,
        &service,
        "the query image on screen",
        "const i = document.getElementById('query-image'); const r = i.getBoundingClientRect(); \
         return !i.hidden && i.complete && r.width > 0 ? [r.left, r.top, r.width, r.height] : null;",
    )
    .await;
    let r: Vec<f64> = rect
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let at = |fx: f64, fy: f64| PointerAction::MoveTo {
        duration: None,
        x: r[0] + fx * r[2],
        y: r[1] + fy * r[3],
    };
    let drag = MouseActions::new("mouse".into())
        .then(at(split + 0.02, 0.02))
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(at(0.7, 0.5))
        .then(at(0.98, 0.98))
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    page.perform_actions(drag).await.unwrap();
    let predicted = poll(
        &page,
        &service,
        "the boxed cup predicted",
        "const p = document.getElementById('predicted-category').textContent; \
         return !document.getElementById('results').hasAttribute('aria-busy') && p === 'cups' ? p : null;",
    )
    .await;
    assert_eq!(predicted, "cups");
    let cups = pairs(&poll(&page, &service, "results for the box", RESULTS).await);
    assert!(cups.iter().all(|(_, c)| c == "cups"), "{cups:?}");
    let box_shown = page
        .execute(
            "const b = document.getElementById('box'); return !b.hidden && b.getBoundingClientRect().width > 0;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(box_shown, json!(true), "the box stays drawn on the image");
    screenshot(&page, "web-box.png").await;

    // 2. Filters narrow the same search: only acme items.
    page.find(Locator::Id("box-clear"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page.find(Locator::Id("filters"))
        .await
        .unwrap()
        .send_keys("brand=acme")
        .await
        .unwrap();
    page.execute(
        "document.getElementById('filters').dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .unwrap();
    let filtered = pairs(
        &poll(
            &page,
            &service,
            "results narrowed to acme",
            "const r = [...document.querySelectorAll('#results .result')]; \
             return !document.getElementById('results').hasAttribute('aria-busy') && r.length && r.length <= 3 \
               ? r.map(e => [e.dataset.itemId, e.dataset.category]) : null;",
        )
        .await,
    );
    assert!(
        filtered.iter().all(|(id, _)| acme.contains(id)),
        "{filtered:?} within {acme:?}"
    );
    page.execute(
        "const f = document.getElementById('filters'); f.value = ''; f.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .unwrap();
    page.find(Locator::Id("category-filter"))
        .await
        .unwrap()
        .select_by_value("any")
        .await
        .unwrap();

    // 3. "More like this" on a result asks for recommendations: that item leaves the grid, the
    //    page says what it shows; "Less like this" on another pushes its look-alikes down.
    let results = pairs(
        &poll(
            &page,
            &service,
            "unfiltered results over every category",
            "const r = [...document.querySelectorAll('#results .result')]; \
             return !document.getElementById('results').hasAttribute('aria-busy') && r.length > 3 \
               ? r.map(e => [e.dataset.itemId, e.dataset.category]) : null;",
        )
        .await,
    );
    let (liked, _) = results[0].clone();
    page.find(Locator::Css(&format!(
        "#results .result[data-item-id='{liked}'] .marks .more"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let after = pairs(
        &poll(
            &page,
            &service,
            "recommendations",
            &format!(
                "const f = document.getElementById('feedback'); const r = [...document.querySelectorAll('#results .result')]; \
                 return !f.hidden && !document.getElementById('results').hasAttribute('aria-busy') && r.length \
                   && !r.some(e => e.dataset.itemId === '{liked}') ? r.map(e => [e.dataset.itemId, e.dataset.category]) : null;"
            ),
        )
        .await,
    );
    assert!(!after.iter().any(|(id, _)| *id == liked), "{after:?}");
    let feedback = page
        .find(Locator::Id("feedback-text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(feedback.contains("more like"), "{feedback}");
    screenshot(&page, "web-recommend.png").await;
    page.close().await.unwrap();
}
