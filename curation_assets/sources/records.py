"""Read raw records from a source file, one at a time, never failing on one bad record.

JSON and JSON Lines are read by our own streaming decoder rather than by `datasets`:
the `datasets` JSON loader rejects a whole file for one malformed line, cannot read
a truncated JSON array (the ShareGPT package ships one) and needs one schema for all
records. Parquet, CSV and `save_to_disk` folders go through Hugging Face `datasets`.

With `max_record_bytes`, a JSON Lines line or JSON array element larger than that is
skipped without being read whole into memory (hostile or broken input: one 2 GB line); it
comes back as a rejected record holding its first `REJECTED_PREFIX_BYTES` and its length.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
DATASETS_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}
_CHUNK_CHARS = 1 << 22  # 4 Mi characters read per step from a JSON array
_STRUCTURAL = re.compile(r'["{}\[\],]')
_SCALAR_TOKEN = re.compile(r"[^\s,\]]*")
_STRING_STOP = re.compile(r'["\\]')
_SKIP_CHUNK = 1 << 20  # bytes read per step while skipping an oversized JSON Lines line
REJECTED_PREFIX_BYTES = 4096  # what a too-large rejected record keeps of itself


class SourceReadError(Exception):
    """The source as a whole cannot be read (missing, empty, unsupported)."""


@dataclass(frozen=True)
class RawRecord:
    """One record as read: either a decoded value or the reason it could not be decoded."""

    record_no: int  # 1-based line number (JSON Lines) or element number
    location: str
    value: Any = None
    error: str | None = None
    raw_text: str | None = None  # the undecoded text, kept for rejected records


def read_records(path: Path, *, split: str = "train", max_record_bytes: int | None = None) -> Iterator[RawRecord]:
    """Yield every record of a local file or `save_to_disk` folder; JSON records larger than
    `max_record_bytes` are rejected unread (bounded memory)."""
    if not path.exists():
        raise SourceReadError(f"source file not found: {path}")
    if path.is_dir():
        yield from _read_saved_dataset(path, split)
        return
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise SourceReadError(f"source file is empty: {path}")
    if suffix in JSON_SUFFIXES:
        yield from _read_json_file(path, max_record_bytes)
    elif suffix in DATASETS_SUFFIXES:
        yield from _read_with_datasets(DATASETS_SUFFIXES[suffix], path, suffix)
    else:
        raise SourceReadError(
            f"unsupported file type {suffix!r} for {path}: use .json, .jsonl, .ndjson, "
            ".parquet, .csv, .tsv or a datasets save_to_disk folder"
        )


def too_large_reason(size: int, max_record_bytes: int, kept: int) -> str:
    return f"record too large: {size} bytes > max_record_bytes {max_record_bytes} (the first {kept} bytes are kept)"


def _read_json_file(path: Path, max_bytes: int | None) -> Iterator[RawRecord]:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if not head:
        raise SourceReadError(f"source file is empty: {path}")
    if head.startswith(b"["):
        yield from _read_json_array(path, max_bytes)
    else:
        yield from _read_json_lines(path, max_bytes)


def _read_json_lines(path: Path, max_bytes: int | None) -> Iterator[RawRecord]:
    limit = -1 if max_bytes is None else max_bytes + 2  # room for "\r\n" after a record of max_bytes
    with path.open("rb") as handle:
        line_no = 0
        while line := handle.readline(limit):
            line_no += 1
            if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            location = f"line {line_no}"
            if max_bytes is not None and len(line.rstrip(b"\r\n")) > max_bytes:
                yield _oversized_line(handle, line, line_no, location, max_bytes)
                continue
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                yield RawRecord(
                    line_no,
                    location,
                    error=f"invalid UTF-8 at byte {err.start} of the line",
                    raw_text=line.decode("utf-8", errors="backslashreplace").rstrip("\n"),
                )
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                yield RawRecord(
                    line_no,
                    location,
                    error=f"malformed JSON: {err.msg} at column {err.colno}",
                    raw_text=text.rstrip("\n"),
                )
                continue
            except RecursionError:
                yield RawRecord(
                    line_no, location, error="malformed JSON: nested too deeply", raw_text=text.rstrip("\n")
                )
                continue
            invalid = _invalid_utf8(value)  # e.g. a lone surrogate escape such as "\ud83d"
            if invalid:
                yield RawRecord(line_no, location, error=invalid, raw_text=text.rstrip("\n"))
                continue
            yield RawRecord(line_no, location, value=value)


def _oversized_line(handle: Any, head: bytes, line_no: int, location: str, max_bytes: int) -> RawRecord:
    """Skip the rest of a line longer than `max_bytes`, a megabyte at a time, counting its bytes."""
    size, tail = len(head), head[-2:]
    while not tail.endswith(b"\n"):
        chunk = handle.readline(_SKIP_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        tail = (tail + chunk)[-2:]
    size -= 2 if tail == b"\r\n" else 1 if tail.endswith(b"\n") else 0  # the line ending is not the record
    prefix = head[:REJECTED_PREFIX_BYTES]
    return RawRecord(
        line_no,
        location,
        error=too_large_reason(size, max_bytes, len(prefix)),
        raw_text=prefix.decode("utf-8", errors="backslashreplace"),
    )


def _read_json_array(path: Path, max_bytes: int | None = None) -> Iterator[RawRecord]:
    """Decode a top-level JSON array element by element, in bounded memory.

    A truncated file (no closing bracket, last element cut off) yields every complete
    element and one rejected record for the cut-off tail. A malformed element is
    rejected and decoding resumes after it (its end found by string-aware bracket depth;
    an element with unbalanced brackets may take the following ones with it). An element
    longer than `max_bytes` is scanned to its end chunk by chunk, never held whole.
    """
    decoder = json.JSONDecoder()
    # A character is at least one byte: an element of more characters is too large for sure.
    max_chars = max_bytes if max_bytes is not None else None
    with path.open("r", encoding="utf-8", errors="surrogateescape") as handle:
        consumed = 0  # characters dropped from the front of `buffer` so far
        buffer = ""
        while not buffer:
            raw = handle.read(_CHUNK_CHARS)
            if not raw:
                return
            buffer = raw.lstrip("\ufeff \t\r\n")
            consumed += len(raw) - len(buffer)
        at_eof = False
        pos = 1  # just past "["
        element_no = 0

        def fill() -> bool:
            nonlocal buffer, pos, consumed, at_eof
            chunk = handle.read(_CHUNK_CHARS)
            if not chunk:
                at_eof = True
                return False
            consumed += pos
            buffer = buffer[pos:] + chunk
            pos = 0
            return True

        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(buffer):
                if not fill():
                    return  # array never closed but nothing left: a clean truncation point
                continue
            if buffer[pos] == "]":
                yield from _trailing_data(buffer[pos + 1 :], handle, element_no + 1)
                return
            start = pos
            location = f"element {element_no + 1} (character {consumed + start})"
            error: str | None = None
            if max_chars is not None and len(buffer) - start > max_chars and _element_end(buffer, start) is None:
                # Longer than any acceptable record and not over yet: skip it without holding it.
                assert max_bytes is not None
                element_no += 1
                scanner = _ElementScanner()
                size, head = 0, ""
                while (end := scanner.feed(buffer, start)) is None:
                    head += buffer[start : start + REJECTED_PREFIX_BYTES - len(head)]
                    size += _byte_length(buffer[start:])
                    consumed += len(buffer)
                    buffer, start = handle.read(_CHUNK_CHARS), 0
                    if not buffer:
                        yield RawRecord(
                            element_no,
                            location,
                            raw_text=_bounded_prefix(head),
                            error=(
                                f"truncated: the file ends inside this record after {size} bytes "
                                f"(> max_record_bytes {max_bytes})"
                            ),
                        )
                        return
                head += buffer[start : min(end, start + REJECTED_PREFIX_BYTES - len(head))]
                size += _byte_length(buffer[start:end])
                prefix = _bounded_prefix(head)
                yield RawRecord(
                    element_no, location, error=too_large_reason(size, max_bytes, _byte_length(prefix)), raw_text=prefix
                )
                pos = end
                continue
            if buffer[start] not in '{["':
                token = _SCALAR_TOKEN.match(buffer, start)
                assert token is not None  # the pattern also matches the empty string
                if token.end() >= len(buffer) and not at_eof and fill():
                    continue  # a number or literal may go on in the next chunk
            try:
                value, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as err:
                error = f"malformed JSON: {err.msg}"
            except RecursionError:
                error = "malformed JSON: nested too deeply"
            if error is not None:
                close = _element_end(buffer, start)
                if close is None and not at_eof and fill():
                    continue  # the element continues in the next chunk
                element_no += 1
                if close is None:
                    yield RawRecord(
                        element_no,
                        location,
                        error="truncated: the file ends inside this record",
                        raw_text=_restore_bytes(buffer[start:]),
                    )
                    return
                yield RawRecord(element_no, location, error=error, raw_text=_restore_bytes(buffer[start:close]))
                pos = close
                continue
            element_no += 1
            pos = end
            if max_bytes is not None and (end - start) * 4 > max_bytes:  # 4 bytes per character at most
                size = _byte_length(buffer[start:end])
                if size > max_bytes:
                    prefix = _bounded_prefix(buffer[start : start + REJECTED_PREFIX_BYTES])
                    yield RawRecord(
                        element_no,
                        location,
                        error=too_large_reason(size, max_bytes, _byte_length(prefix)),
                        raw_text=prefix,
                    )
                    continue
            invalid = _invalid_utf8(value)
            if invalid:
                yield RawRecord(element_no, location, error=invalid, raw_text=_restore_bytes(buffer[start:end]))
            else:
                yield RawRecord(element_no, location, value=value)


def _trailing_data(rest: str, handle: Any, record_no: int) -> Iterator[RawRecord]:
    """A rejected record for anything but whitespace after the closing bracket (first 10,000 characters)."""
    while not rest.strip():
        rest = handle.read(_CHUNK_CHARS)
        if not rest:
            return
    rest = rest.lstrip()
    if len(rest) < 10_000:
        rest += handle.read(10_000 - len(rest))
    yield RawRecord(
        record_no,
        "after the closing bracket",
        error="data after the end of the JSON array",
        raw_text=_restore_bytes(rest[:10_000].rstrip()),
    )


class _ElementScanner:
    """Finds where an array element ends in text fed piece by piece: after its closing bracket,
    or at the `,`/`]` that ends a scalar. Strings are skipped whole, escapes included, even when
    a piece ends inside one."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the previous piece ended on a backslash inside a string

    def feed(self, text: str, pos: int = 0) -> int | None:
        """End of the element in `text` (scanning from `pos`), or None if it goes on after `text`."""
        while pos < len(text):
            if self.in_string:
                if self.escaped:
                    self.escaped, pos = False, pos + 1
                    continue
                stop = _STRING_STOP.search(text, pos)
                if stop is None:
                    return None
                pos = stop.end()
                if stop.group() == "\\":
                    self.escaped = True
                else:
                    self.in_string = False
                continue
            match = _STRUCTURAL.search(text, pos)
            if match is None:
                return None
            char = match.group()
            pos = match.end()
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                if self.depth == 0:
                    return match.start()
                self.depth -= 1
                if self.depth == 0:
                    return match.end()
            elif self.depth == 0:  # a comma ending a scalar element
                return match.start()
        return None


def _element_end(text: str, start: int) -> int | None:
    """End of the array element starting at `start`, or None if the text ends first."""
    return _ElementScanner().feed(text, start)


def _bounded_prefix(text: str) -> str:
    """At most REJECTED_PREFIX_BYTES of `text` as UTF-8 (a character cut in two is dropped)."""
    return _restore_bytes(text).encode("utf-8")[:REJECTED_PREFIX_BYTES].decode("utf-8", errors="ignore")


def _byte_length(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogateescape"))


def _restore_bytes(text: str) -> str:
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


def _invalid_utf8(value: Any) -> str | None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "invalid UTF-8: the record holds bytes or a lone surrogate that is not valid UTF-8"
    except RecursionError:
        return "malformed JSON: nested too deeply"
    return None


def _read_with_datasets(builder: str, path: Path, suffix: str) -> Iterator[RawRecord]:
    import datasets

    kwargs: dict[str, Any] = {"sep": "\t"} if suffix == ".tsv" else {}
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as err:  # datasets raises many types; the message is what matters
        raise SourceReadError(f"cannot read {path} with datasets ({builder}): {err}") from err
    yield from _iterate_dataset(dataset, "row")


def _read_saved_dataset(path: Path, split: str) -> Iterator[RawRecord]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise SourceReadError(f"{path} is not a datasets save_to_disk folder: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise SourceReadError(f"{path} has splits {sorted(loaded)}, not {split!r}; set `split`")
        loaded = loaded[split]
    yield from _iterate_dataset(loaded, "row")


def read_hub_dataset(
    name: str,
    split: str,
    *,
    config: str | None = None,
    revision: str | None = None,
    data_files: Any = None,
    streaming: bool = False,
) -> Iterator[RawRecord]:
    """Records of a Hugging Face Hub dataset or local dataset folder, via `datasets.load_dataset`
    (a Hub name needs network access or a local HF cache)."""
    import datasets

    what = f"Hugging Face dataset {name!r}" + (f" config {config!r}" if config else "") + f" split {split!r}"
    try:
        dataset = datasets.load_dataset(
            name, config, split=split, revision=revision, data_files=data_files, streaming=streaming
        )
    except Exception as err:
        raise SourceReadError(f"cannot load {what}: {err}") from err
    try:
        yield from _iterate_dataset(dataset, "row")
    except SourceReadError:
        raise
    except Exception as err:  # a streamed dataset fails while it is iterated (network, bad file)
        raise SourceReadError(f"cannot read {what}: {err}") from err


def _iterate_dataset(dataset: Any, unit: str) -> Iterator[RawRecord]:
    index = 0
    for index, row in enumerate(dataset, start=1):  # a streamed dataset has no len()
        yield RawRecord(index, f"{unit} {index}", value=row)
    if index == 0:
        raise SourceReadError("the dataset has no rows")
