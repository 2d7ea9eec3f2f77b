"""Kept for tests/llm, which still imports from here; new code imports tests.support.runs."""

from tests.support.runs import materialize_document  # noqa: F401
