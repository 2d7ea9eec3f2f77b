-- Replace a mods selection's generations. Parameters: $selection, $generations_file.
DELETE FROM mods_generations WHERE selection = $selection;

INSERT INTO mods_generations
SELECT $selection, g.sample_id, g.question, g.generated, g.generated_reward, g.necessary, g.failure
FROM read_parquet($generations_file) AS g;
