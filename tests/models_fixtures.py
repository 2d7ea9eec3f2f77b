"""Kept for the modules that still import the builders from here (tests/models, tests/methods,
tests/test_faults.py, bench/); new code imports tests.support.models or uses the session
fixtures of tests/conftest.py."""

from tests.support.models import (  # noqa: F401
    CHATML_TEMPLATE,
    build_tiny_causal_lm,
    build_tiny_reward_model,
    build_tiny_sentence_model,
)
