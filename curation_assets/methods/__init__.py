"""Selection and scoring algorithms over plain arrays: no Dagster, no DuckDB, no file paths."""
