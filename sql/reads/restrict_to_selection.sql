-- Appended to a WHERE clause when a stage has `input_selection` (parameter $input_selection).
  AND s.sample_id IN (SELECT sample_id FROM selections WHERE selection = $input_selection)
