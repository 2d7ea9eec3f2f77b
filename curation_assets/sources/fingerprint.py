"""A data version for a source: changes whenever the bytes it reads change."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 22


def file_fingerprint(path: Path) -> str:
    """BLAKE2b of the content (a folder: of every file's relative name and content), 20 hex digits."""
    digest = hashlib.blake2b(digest_size=10)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
