-- What the classifier head learns from, per item: the model's pooled tokens (model.features_output),
-- 768 values for CLIP ViT-B/16. Kept with the embedding so a head can be trained, and a stored
-- prediction re-made by reclassify, without running the model again. NULL for items written before
-- this migration or by a model without a token output; the head learns from the embedding until every
-- labelled item has features (`lookalike reindex --recheck` fills them in).
ALTER TABLE items ADD COLUMN features real[];
