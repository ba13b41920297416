-- Running sums of the embeddings of items whose category a submitter provided, per model and category.
-- The normalised sum is the category's prototype (centroid direction); the classifier compares a new
-- image with every prototype. Kept as sums so adding or deleting an item is one cheap update.
CREATE TABLE category_prototypes (
    model_id    text NOT NULL,
    category    text NOT NULL,
    vector_sum  real[] NOT NULL,
    items       integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, category)
);
