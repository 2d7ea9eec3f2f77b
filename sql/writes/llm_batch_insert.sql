-- Record a batch just created (status 'submitted'), before anything waits on it.
INSERT INTO llm_batches
VALUES ($batch_id, $pipeline, $stage, $config_hash, $shard, $base_url, $model, $input_file_id,
        $request_hashes, 'submitted', NULL, $now, NULL);
