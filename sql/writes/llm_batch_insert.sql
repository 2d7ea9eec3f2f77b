-- Record a batch: 'submitting' (written before `create`, batch_id = 'submitting-<token>', the token
-- also in the batch's metadata) or 'submitted'.
INSERT INTO llm_batches
VALUES ($batch_id, $pipeline, $stage, $config_hash, $shard, $base_url, $model, $input_file_id,
        $request_hashes, $status, NULL, $now, NULL);
