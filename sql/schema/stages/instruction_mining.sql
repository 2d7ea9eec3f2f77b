-- Instruction Mining (Cao et al. 2023): per-sample indicators, and a linear rule fitted from
-- random subsets' mean indicators to the validation loss of a model fine-tuned on each subset.

-- instruction_mining_indicators stage: one row per sample. NULL = the upstream stage had no value
-- for this sample, or the indicator is undefined (MTLD of a text whose words are all distinct);
-- `missing` names the NULL indicators that were configured.
CREATE TABLE IF NOT EXISTS instruction_mining_indicators (
    stage          VARCHAR NOT NULL,
    config_hash    VARCHAR NOT NULL,
    sample_id      VARCHAR NOT NULL,
    input_length   INTEGER,                -- instruction + input, in words or tokens (length_unit)
    output_length  INTEGER,                -- output (first assistant reply), same unit
    reward         DOUBLE,                 -- the `reward` stage column, if configured
    perplexity     DOUBLE,                 -- the `perplexity` stage's perplexity, if configured
    mtld           DOUBLE,                 -- MTLD lexical diversity of the output (threshold 0.72)
    knn            DOUBLE,                 -- mean Euclidean distance to the knn_k nearest embeddings
    knn_pool       INTEGER,                -- samples the neighbours were searched among
    extra          MAP(VARCHAR, DOUBLE),   -- extra_scores as '<stage>.<column>' -> value
    missing        VARCHAR[] NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);

-- instruction_mining_fit stage: the rule's prediction per sample (indicators NULL for a sample are
-- replaced by the pool mean of that indicator and listed in `imputed`).
CREATE TABLE IF NOT EXISTS instruction_mining_predictions (
    stage           VARCHAR NOT NULL,
    config_hash     VARCHAR NOT NULL,
    sample_id       VARCHAR NOT NULL,
    predicted       DOUBLE,      -- the rule's value, in the fitted response's units (log loss by default)
    predicted_loss  DOUBLE,      -- the same as a loss (exp of predicted for response = log_loss)
    imputed         VARCHAR[] NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);

-- One row per fitted rule.
CREATE TABLE IF NOT EXISTS instruction_mining_fits (
    stage                 VARCHAR NOT NULL,
    config_hash           VARCHAR NOT NULL,
    response              VARCHAR NOT NULL,   -- log_loss | loss
    indicators            VARCHAR[] NOT NULL,
    n_subsets             INTEGER NOT NULL,
    subset_size           INTEGER NOT NULL,
    pool_size             INTEGER NOT NULL,
    r_squared             DOUBLE,
    adjusted_r_squared    DOUBLE,
    rmse                  DOUBLE,
    target                VARCHAR NOT NULL,
    validation_samples    INTEGER NOT NULL,
    base_validation_loss  DOUBLE,             -- the model before fine-tuning, for reference
    created_at            TIMESTAMP NOT NULL,
    PRIMARY KEY (stage, config_hash)
);

-- The rule's terms: '(intercept)' and one row per indicator.
CREATE TABLE IF NOT EXISTS instruction_mining_coefficients (
    stage                     VARCHAR NOT NULL,
    config_hash               VARCHAR NOT NULL,
    term                      VARCHAR NOT NULL,
    coefficient               DOUBLE NOT NULL,   -- raw indicator units
    standardised_coefficient  DOUBLE NOT NULL,   -- per standard deviation of the subset means
    std_error                 DOUBLE,
    t_value                   DOUBLE,
    p_value                   DOUBLE,
    subset_mean               DOUBLE,            -- mean / std of the indicator's subset means
    subset_std                DOUBLE,
    imputation_value          DOUBLE,            -- pool mean, used where a sample's value is NULL
    PRIMARY KEY (stage, config_hash, term)
);

-- The fine-tuning runs the rule is fitted on: one row per random subset.
CREATE TABLE IF NOT EXISTS instruction_mining_subsets (
    stage                VARCHAR NOT NULL,
    config_hash          VARCHAR NOT NULL,
    subset               INTEGER NOT NULL,
    sample_ids           VARCHAR[] NOT NULL,
    mean_indicators      MAP(VARCHAR, DOUBLE) NOT NULL,
    validation_loss      DOUBLE NOT NULL,   -- mean over validation samples of the response-token loss
    training_steps       INTEGER NOT NULL,
    final_training_loss  DOUBLE,
    PRIMARY KEY (stage, config_hash, subset)
);
