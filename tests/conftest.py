import os

# Anything that tries to reach a model hub must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`-n 2`) each worker computes on one thread (and so do the processes it starts):
# two workers of two threads each on two cores would slow every BLAS call.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


_exit_status = {"code": 0}


def pytest_sessionfinish(session, exitstatus):
    _exit_status["code"] = int(exitstatus)


def pytest_unconfigure(config):
    """Skip interpreter finalisation, where DuckDB 2.0's nanobind prints "leaked instance" noise
    after tests that ran Dagster with torch loaded; all output is written by now."""
    import sys

    if os.environ.get("CURATION_TEST_HARD_EXIT", "1") == "1" and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """The packaged SmolLM2 served by llama-cpp-python on a free port, for the whole session."""
    from tests.llm_server import start_server

    server = start_server(tmp_path_factory.mktemp("llm_server"))
    yield server
    server.stop()


# Tiny random models (tests/support/models.py), built once per session: a test that needs a
# variant (no chat template, extra words) builds its own; none writes into these folders.
@pytest.fixture(scope="session")
def tiny_sentence_model(tmp_path_factory):
    """A 1-layer random BERT sentence-transformers folder (MiniLM's tokenizer)."""
    from tests.support.models import build_tiny_sentence_model

    return build_tiny_sentence_model(tmp_path_factory.mktemp("tiny_sentence_model"))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A 2-layer random Llama with a ChatML template."""
    from tests.support.models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory):
    """A 2-layer random DeBERTa-v2 reward model (one output)."""
    from tests.support.models import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny_reward_model"), "deberta")
