INSERT INTO stage_runs VALUES (
    $stage_run_id, $pipeline, $stage, $kind, $config::JSON, $config_hash, $code_version,
    $dagster_run_id, $rows_in, $rows_out, $seconds, $device, $stats::JSON, $started_at, $finished_at
);
