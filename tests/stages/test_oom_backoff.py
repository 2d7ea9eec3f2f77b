"""Out-of-memory on a batch halves the batch size and the run goes on."""

import pytest

from curation_assets.stages.core.causal_lm import run_batches_with_oom_backoff


def test_batch_is_halved_until_it_fits_and_every_sample_is_processed():
    seen: list[list[int]] = []

    def run(batch: list[int]) -> None:
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append(batch)

    stats: dict = {}
    final = run_batches_with_oom_backoff(run, list(range(10)), 8, stats)
    assert final == 2 and stats["oom_halvings"] == 2
    assert [i for batch in seen for i in batch] == list(range(10))


def test_other_errors_and_single_sample_oom_are_raised():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches_with_oom_backoff(lambda b: (_ for _ in ()).throw(RuntimeError("shape mismatch")), [0, 1], 2, {})
    with pytest.raises(MemoryError):
        run_batches_with_oom_backoff(lambda b: (_ for _ in ()).throw(MemoryError()), [0], 1, {})
