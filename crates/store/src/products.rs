//! Products: the items (images) that name the same `product_id`. There is no table of products: a
//! product is its items, so it appears with its first image and is gone with its last.
//!
//! A product's category is decided here, in one query, for every endpoint that shows one: each image
//! keeps its own category (searches filter images by it), and the product takes the category most of
//! its images have; a tie goes to the category with more provided (labelled) images, then to the
//! first by name. `categories` counts every category its images have, so a product whose images
//! disagree says so instead of hiding it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::items::Item;
use crate::{Result, Store};

/// One product as the listing and the product page show it.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct ProductSummary {
    pub product_id: String,
    /// The category most of its images have (see the module docs for ties); `None` when most have none.
    pub category: Option<String>,
    pub images: i64,
    /// How many different categories its images have (`None` counts as one): more than one means
    /// they disagree.
    pub categories: i64,
    /// Its first submitted image (item ids are time-ordered UUIDv7s of their first job): what a page
    /// shows for the product.
    pub cover: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// Per product and category: how many images, how many labelled; the product's category is the first
// of its rows by (images desc, labelled desc, name).
macro_rules! summaries {
    () => {
        "WITH per_category AS (
             SELECT product_id, category, count(*) AS n,
                    count(*) FILTER (WHERE category_source = 'provided') AS labelled
             FROM items WHERE product_id IS NOT NULL AND ($1::text[] IS NULL OR product_id = ANY($1))
             GROUP BY product_id, category),
         chosen AS (
             SELECT DISTINCT ON (product_id) product_id, category
             FROM per_category ORDER BY product_id, n DESC, labelled DESC, category NULLS LAST),
         products AS (
             SELECT product_id, count(*) AS images, count(DISTINCT coalesce(category, '')) AS categories,
                    (array_agg(id ORDER BY id))[1] AS cover,
                    min(created_at) AS created_at, max(updated_at) AS updated_at
             FROM items WHERE product_id IS NOT NULL AND ($1::text[] IS NULL OR product_id = ANY($1))
             GROUP BY product_id)
         SELECT p.product_id, c.category, p.images, p.categories, p.cover, p.created_at, p.updated_at
         FROM products p JOIN chosen c USING (product_id)"
    };
}

impl Store {
    /// A page of products, newest first, in one category (their own, as the module docs decide it) or
    /// all; with the number of products matching.
    pub async fn list_products(
        &self,
        category: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ProductSummary>, i64)> {
        let page = concat!(
            summaries!(),
            " WHERE ($2::text IS NULL OR c.category = $2)
              ORDER BY p.created_at DESC, p.product_id LIMIT $3 OFFSET $4"
        );
        let products = sqlx::query_as(page)
            .bind(None::<Vec<String>>)
            .bind(category)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total = concat!(
            "SELECT count(*) FROM (",
            summaries!(),
            " WHERE ($2::text IS NULL OR c.category = $2)) AS matching"
        );
        let total = sqlx::query_scalar(total)
            .bind(None::<Vec<String>>)
            .bind(category)
            .fetch_one(&self.pool)
            .await?;
        Ok((products, total))
    }

    /// These products' summaries (those that exist), in no particular order.
    pub async fn product_summaries(&self, ids: &[String]) -> Result<Vec<ProductSummary>> {
        Ok(sqlx::query_as(summaries!())
            .bind(ids)
            .fetch_all(&self.pool)
            .await?)
    }

    /// A product's images in the order they were first submitted (empty when no item names it).
    pub async fn product_items(&self, product_id: &str) -> Result<Vec<Item>> {
        let sql = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE product_id = $1 ORDER BY id"
        );
        Ok(sqlx::query_as(sql)
            .bind(product_id)
            .fetch_all(&self.pool)
            .await?)
    }
}
