-- Replace a mods selection's generations. Parameters: $selection, $config_hash, $generations_file.
DELETE FROM mods_generations WHERE selection = $selection;

INSERT INTO mods_generations (selection, sample_id, question, generated, generated_reward, necessary, failure,
                              config_hash)
SELECT $selection, g.sample_id, g.question, g.generated, g.generated_reward, g.necessary, g.failure, $config_hash
FROM read_parquet($generations_file) AS g;
