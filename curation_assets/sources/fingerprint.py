"""A data version for a source: changes whenever the bytes it reads change.

A fingerprint is only taken when two reads of the content a moment apart agree (and size and
modification time did not move in between): a file observed while it is being written gets no
fingerprint, so nothing downstream is triggered by a half-written file.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

_CHUNK = 1 << 22


class SourceChangingError(RuntimeError):
    """The source kept changing while it was read: it is probably being written."""


def content_hash(path: Path) -> str:
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


def file_fingerprint(path: Path, *, settle_s: float = 1.0, attempts: int = 3) -> str:
    """`content_hash` once two reads `settle_s` apart agree (and size and mtime did not move);
    SourceChangingError when `attempts` further reads each found it changed."""
    previous, signature = content_hash(path), _stat_signature(path)
    for _ in range(attempts):
        time.sleep(settle_s)  # a writer that pauses between writes shorter than this is caught
        current, current_signature = content_hash(path), _stat_signature(path)
        if current == previous and current_signature == signature:
            return current
        previous, signature = current, current_signature
    raise SourceChangingError(
        f"{path} changed between reads {settle_s:g} s apart ({attempts + 1} reads): it is probably being "
        "written; it is fingerprinted again at the next observation"
    )


def _stat_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    signature = []
    for file in files:
        stat = file.stat()
        signature.append((str(file), stat.st_size, stat.st_mtime_ns))
    return tuple(signature)
