-- Appended to a WHERE clause for sample-generating stages: only samples read from a source.
  AND s.parent_id IS NULL
