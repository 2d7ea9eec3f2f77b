-- Every materialisation, newest first, with its config and what it computed.
CREATE OR REPLACE VIEW stage_history AS
SELECT stage, kind, started_at, finished_at, round(seconds, 3) AS seconds, rows_in, rows_out,
       config_hash, code_version, device, dagster_run_id, config, stats
FROM stage_runs
ORDER BY started_at DESC;
