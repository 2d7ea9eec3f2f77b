-- Selection-quality evaluation (`evaluation:` block): one row per evaluated selection (and the
-- un-tuned model, the full pool, the token-matched random subsets), replaced whenever the evaluation asset runs.
CREATE TABLE IF NOT EXISTS evaluation_results (
    evaluation           VARCHAR NOT NULL,   -- the evaluation's name
    selection            VARCHAR NOT NULL,   -- selection name, or `base_model`
    kind                 VARCHAR NOT NULL,   -- the selection's kind
    role                 VARCHAR NOT NULL,   -- method | baseline | base_model | full_pool | token_matched
    k                    INTEGER NOT NULL,   -- training samples
    members_hash         VARCHAR,            -- identity of the training set (sorted sample ids)
    finetune_key         VARCHAR NOT NULL,   -- cache key: training set + hyperparameters
    target_loss          DOUBLE,             -- mean response-token loss on the held-out target samples
    general_loss         DOUBLE,             -- same on the general held-out set
    target_delta         DOUBLE,             -- target_loss - mean over the baselines
    general_delta        DOUBLE,
    selection_seconds    DOUBLE,             -- the selection asset's own latest run
    upstream_seconds     DOUBLE,             -- plus every stage and selection it reads (stage_runs)
    finetune_seconds     DOUBLE,             -- when the fine-tune ran (cached: its original time)
    eval_seconds         DOUBLE,             -- loss measurement, both sets
    computed_now         BOOLEAN NOT NULL,   -- false: everything came from the fine-tune cache
    training_steps       INTEGER,
    final_training_loss  DOUBLE,
    config_hash          VARCHAR NOT NULL,   -- of the evaluation block
    evaluated_at         TIMESTAMP NOT NULL,
    PRIMARY KEY (evaluation, selection)
);

-- Statistics added by issue #19 (ADD COLUMN: files written before keep their rows).
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS training_seeds INTEGER;     -- fine-tunes averaged
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS response_tokens BIGINT;    -- trained tokens of the set
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS target_ci_low DOUBLE;      -- paired bootstrap 95%
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS target_ci_high DOUBLE;     --   interval of target_delta
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS general_ci_low DOUBLE;
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS general_ci_high DOUBLE;
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS beats_all_random BOOLEAN;  -- target loss below every baseline's
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS token_matched_delta DOUBLE;    -- target loss - the token-
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS token_matched_ci_low DOUBLE;   --   matched random subsets'
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS token_matched_ci_high DOUBLE;
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS matched_to VARCHAR;        -- token_matched rows: the method
ALTER TABLE evaluation_results ADD COLUMN IF NOT EXISTS pool VARCHAR;              -- `all` or the sub-pool band (`pools:`)

-- Per held-out sample losses of every evaluated model and training seed (the bootstrap's input).
CREATE TABLE IF NOT EXISTS evaluation_losses (
    evaluation     VARCHAR NOT NULL,
    selection      VARCHAR NOT NULL,   -- as in evaluation_results
    training_seed  INTEGER NOT NULL,   -- -1 for the un-tuned model
    heldout_set    VARCHAR NOT NULL,
    position       INTEGER NOT NULL,   -- evaluation_samples.position
    loss           DOUBLE,             -- NULL: no response token survived truncation
    PRIMARY KEY (evaluation, selection, training_seed, heldout_set, position)
);

-- The held-out samples an evaluation measured (so every loss can be recomputed), replaced with it.
CREATE TABLE IF NOT EXISTS evaluation_samples (
    evaluation   VARCHAR NOT NULL,
    heldout_set  VARCHAR NOT NULL,   -- target:<name> | general:<name>
    position     INTEGER NOT NULL,
    sample_id    VARCHAR NOT NULL,
    messages     STRUCT(role VARCHAR, content VARCHAR)[] NOT NULL,
    PRIMARY KEY (evaluation, heldout_set, sample_id)
);
