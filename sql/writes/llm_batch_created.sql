-- The provider created the batch of a 'submitting' row: it now carries the provider's id.
UPDATE llm_batches SET batch_id = $batch_id, status = 'submitted', detail = NULL
WHERE batch_id = $row_id;
