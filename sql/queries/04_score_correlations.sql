-- How the small LM's loss relates to answer length and turns, over the samples it scored (demo names).
SELECT count(*) AS samples,
       round(corr(smollm_loss__loss, lengths__output_words), 3) AS loss_vs_output_words,
       round(corr(smollm_loss__loss, lengths__n_turns), 3) AS loss_vs_turns,
       round(corr(smollm_loss__el2n, smollm_loss__loss), 3) AS el2n_vs_loss
FROM sample_scores
WHERE smollm_loss__loss IS NOT NULL;
