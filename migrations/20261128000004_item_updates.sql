-- Each item keeps its embedding, so that
-- * resubmitting an item's external_id can take the old vector out of its category's prototype in the
--   same transaction that stores the new one (the index alone cannot tell which vector the database
--   last committed), and
-- * the vector index can be rebuilt from Postgres without running the model again.
-- Rows written before this migration have none; they are re-embedded when their external_id is reused.
ALTER TABLE items ADD COLUMN embedding real[];
