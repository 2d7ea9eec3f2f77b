-- Samples too long for the models: truncated by the embedding model or the small LM (demo names).
SELECT count(*) FILTER (WHERE embed__truncated) AS truncated_for_embedding,
       count(*) FILTER (WHERE smollm_loss__truncated) AS truncated_for_smollm,
       count(*) AS active_samples
FROM sample_scores;
