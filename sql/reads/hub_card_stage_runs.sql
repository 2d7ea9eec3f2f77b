-- The latest run of every stage of the pipeline that last ran $selection (every pipeline for
-- `samples`), sources first, then in the order they ran: what a dataset card lists.
SELECT pipeline, stage, kind, config::VARCHAR AS config, config_hash, code_version, finished_at, rows_in, rows_out,
       stats::VARCHAR AS stats
FROM stage_runs
WHERE $selection = 'samples'
   OR pipeline = (SELECT pipeline FROM stage_runs WHERE stage = $selection ORDER BY finished_at DESC LIMIT 1)
QUALIFY row_number() OVER (PARTITION BY pipeline, stage ORDER BY finished_at DESC) = 1
ORDER BY kind <> 'source', started_at, stage;
