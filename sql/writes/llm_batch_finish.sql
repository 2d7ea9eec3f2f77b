-- A batch's answers are in llm_cache ('downloaded'), or it ended without output ('failed').
UPDATE llm_batches SET status = $status, detail = $detail, finished_at = $now
WHERE batch_id = $batch_id;
