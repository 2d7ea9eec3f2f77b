-- One view per stage, named after it: that stage's rows at its current config, for active samples.
-- View name, table, stage and config hash are filled in from the pipeline (identifiers and hashes only).
CREATE OR REPLACE VIEW "{view}" AS
SELECT t.* EXCLUDE (stage, config_hash)
FROM {table} AS t
JOIN samples AS s USING (sample_id)
WHERE s.active AND t.stage = '{stage}' AND t.config_hash = '{config_hash}';
