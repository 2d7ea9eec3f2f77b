from curation_assets.store.duckdb_store import DuckDBStore, StoreLockedError
from curation_assets.store.sql_files import read_sql

__all__ = ["DuckDBStore", "StoreLockedError", "read_sql"]
