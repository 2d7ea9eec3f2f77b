-- Whether the members' original records share one set of fields (the placeholder: the export query):
-- records that are not JSON objects (generated samples have none), distinct key sets, merged structure.
SELECT count(*) FILTER (WHERE raw_record IS NULL OR json_type(raw_record) <> 'OBJECT') AS not_objects,
       count(DISTINCT list_sort(json_keys(raw_record))) FILTER (WHERE json_type(raw_record) = 'OBJECT') AS key_sets,
       json_group_structure(raw_record::JSON)::VARCHAR AS structure  -- used only when all are objects
FROM ({export}
) AS e;
