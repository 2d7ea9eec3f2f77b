from curation_assets.store.base import Store
from curation_assets.store.config import (
    DuckDBStoreConfig,
    DuckLakeStoreConfig,
    StoreConfig,
    StoreUnavailableError,
    open_store,
)
from curation_assets.store.duckdb_store import DuckDBStore, StoreLockedError
from curation_assets.store.sql_files import read_sql

__all__ = [
    "DuckDBStore",
    "DuckDBStoreConfig",
    "DuckLakeStoreConfig",
    "Store",
    "StoreConfig",
    "StoreLockedError",
    "StoreUnavailableError",
    "open_store",
    "read_sql",
]
