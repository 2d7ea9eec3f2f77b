-- A selection's members' vectors from one embedding stage config, best rank first (members
-- the stage did not embed are absent).
SELECT e.embedding
FROM selections AS m
JOIN embeddings AS e USING (sample_id)
WHERE m.selection = $selection AND e.stage = $stage AND e.config_hash = $config_hash
ORDER BY m.rank;
