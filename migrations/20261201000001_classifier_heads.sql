-- Trained classifier heads (softmax regression over the labelled items' embeddings), one row per
-- training, per model. Every process classifies with the latest version of its model; older versions
-- stay for the record (what a stored prediction was made with) and are small (a few hundred KB).
CREATE TABLE classifier_heads (
    model_id            text NOT NULL,
    version             integer NOT NULL,
    -- lookalike_classifier::Head as JSON: categories, standardisation, weights, bias, temperature.
    head                jsonb NOT NULL,
    -- Labelled items it was trained on, and how many of those were held out to measure it first.
    trained_on          integer NOT NULL,
    held_out            integer NOT NULL,
    held_out_accuracy   real,
    training_ms         integer NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, version)
);

-- The head version that took part in an item's predicted category (NULL: provided, none, or predicted
-- without a head). A new head changes stored predictions only through `lookalike reclassify`.
ALTER TABLE items ADD COLUMN head_version integer;
