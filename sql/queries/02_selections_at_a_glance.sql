-- Size and score range of every selection.
SELECT * FROM selection_summary;
