-- Products: several images (items) may name the product they show, so that similarity results can
-- answer one entry per product and a product can be listed, searched from and deleted as a whole.
-- The job keeps what the submitter gave; the item takes it when the job succeeds (as external_id).
-- There is no products table: a product exists while one of its items does, so deleting its last
-- image leaves nothing behind to clean up.
ALTER TABLE jobs ADD COLUMN product_id text;
ALTER TABLE items ADD COLUMN product_id text;
CREATE INDEX items_product ON items (product_id, created_at) WHERE product_id IS NOT NULL;
