-- The fitted rule of an instruction_mining_fit stage at one config. Parameters: $stage, $config_hash.
SELECT f.response, c.term, c.coefficient, c.imputation_value
FROM instruction_mining_fits AS f
JOIN instruction_mining_coefficients AS c USING (stage, config_hash)
WHERE f.stage = $stage AND f.config_hash = $config_hash
ORDER BY c.term = '(intercept)' DESC, list_position(f.indicators, c.term);
