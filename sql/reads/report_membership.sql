-- Size of a selection, of its pool (active samples of its input: every active sample, or the active
-- members of $input_selection when it is not NULL), its stored config hash and last update.
SELECT (SELECT count(*) FROM selections WHERE selection = $selection) AS size,
       (SELECT count(*) FROM samples AS s
        WHERE s.active AND ($input_selection IS NULL OR s.sample_id IN (
            SELECT sample_id FROM selections WHERE selection = $input_selection))) AS pool_size,
       (SELECT max(config_hash) FROM selections WHERE selection = $selection) AS config_hash,
       (SELECT max(selected_at) FROM selections WHERE selection = $selection) AS selected_at,
       (SELECT count(score) FROM selections WHERE selection = $selection) AS scored_members;
