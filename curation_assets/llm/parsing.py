"""Parsers of judge answers. Each returns a value or None; a caller never substitutes a default
score for None (DEITA's code returns 3.0 on a parse failure; we record a failure instead)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_NUMBER = r"[-+]?\d+(?:\.\d+)?"


def _finite(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def json_object(answer: str) -> dict[str, Any] | None:
    """The answer as a JSON object (structured output), else None."""
    text = answer.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _json_number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def parse_alpagasus_score(answer: str, low: float = 0.0, high: float = 5.0) -> float | None:
    """AlpaGasus: the first line is the score; else the number after "score:"; a structured
    answer {"score": s} is read directly. Out of [low, high] -> None."""
    obj = json_object(answer)
    if obj is not None:
        score = _json_number(obj, "score")
        return score if score is not None and low <= score <= high else None
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    candidates: list[float | None] = []
    if lines:
        first = lines[0].strip("*#`'\" ").rstrip(".")
        match = re.fullmatch(rf"(?:score\s*[:=]?\s*)?({_NUMBER})\s*(?:/\s*5(?:\.0)?|out of 5)?", first, re.I)
        if match:
            candidates.append(_finite(match.group(1)))
    if not candidates or candidates[0] is None:
        match = re.search(rf"score\s*(?:is|of)?\s*[:=]?\s*\**\s*({_NUMBER})", answer, re.I)
        candidates = [_finite(match.group(1))] if match else []
    if not candidates or candidates[0] is None:
        return None
    score = candidates[0]
    return score if low <= score <= high else None


LIFT_RUBRIC = {"clarity": 15.0, "difficulty": 25.0, "explanation": 25.0, "accuracy": 35.0}


def parse_lift_rubric(answer: str) -> dict[str, float] | None:
    """LIFT quality: the four rubric lines, each within its maximum; total = their sum.

    A stated Total that disagrees with the parts is ignored (the parts are what the rubric
    defines). Any missing or out-of-range part -> None.
    """
    parts: dict[str, float] = {}
    obj = json_object(answer)
    for name, maximum in LIFT_RUBRIC.items():
        if obj is not None:
            value = _json_number(obj, name)
        else:
            match = re.search(rf"{name}\s*[:=]\s*\**\s*({_NUMBER})", answer, re.I)
            value = _finite(match.group(1)) if match else None
        if value is None or not 0 <= value <= maximum:
            return None
        parts[name] = value
    parts["total"] = sum(parts[name] for name in LIFT_RUBRIC)
    return parts


def parse_ranked_scores(answer: str, label: str, count: int) -> list[float] | None:
    """DEITA evol ranking: "[<label> k] Score: s" for k = 1..count, each s in [1, count]; a
    structured answer {"<label> k": s, ...} (`ranked_scores_schema`) is read directly."""
    obj = json_object(answer)
    if obj is not None:
        values = [_json_number(obj, f"{label} {k}") for k in range(1, count + 1)]
        if any(value is None or not 1 <= value <= count for value in values):
            return None
        return [float(value) for value in values if value is not None]
    scores: dict[int, float] = {}
    for match in re.finditer(rf"\[?\s*{label}\s*(\d+)\s*\]?\s*[:\-]?\s*score\s*[:=]?\s*({_NUMBER})", answer, re.I):
        k, value = int(match.group(1)), _finite(match.group(2))
        if 1 <= k <= count and value is not None and 1 <= value <= count and k not in scores:
            scores[k] = value
    if len(scores) != count:
        return None
    return [scores[k] for k in range(1, count + 1)]


def clean_generation(answer: str, markers: tuple[str, ...] = ()) -> str | None:
    """A rewritten instruction/response: strip echoed section markers and quotes; empty -> None."""
    text = answer.strip()
    for marker in markers:
        if text.lower().startswith(marker.lower()):
            text = text[len(marker) :].lstrip(" :\n")
    text = text.strip().strip('"').strip()
    return text or None


ALPAGASUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 5}},
    "required": ["score"],
}
LIFT_RUBRIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": list(LIFT_RUBRIC),
    "properties": {name: {"type": "integer", "minimum": 0, "maximum": int(m)} for name, m in LIFT_RUBRIC.items()},
}


def ranked_scores_schema(label: str, count: int) -> dict[str, Any]:
    """JSON schema of a DEITA ranking answer: {"<label> 1": s1, ..., "<label> count": s_count}, each an
    integer 1..count (an enum, which every schema-to-grammar converter supports)."""
    keys = [f"{label} {k}" for k in range(1, count + 1)]
    return {
        "type": "object",
        "required": keys,
        "additionalProperties": False,
        "properties": {key: {"type": "integer", "enum": list(range(1, count + 1))} for key in keys},
    }
