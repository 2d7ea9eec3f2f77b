"""Config hashes survive refactors: every shipped pipeline's stage hashes equal the recorded ones
(a changed hash would recompute every stored row of that stage)."""

import json

from tests.stages.config_hashes import FIXTURE, all_hashes


def test_config_hashes_equal_the_recorded_ones():
    recorded = json.loads(FIXTURE.read_text())
    assert all_hashes() == recorded


def test_batch_size_and_shards_stay_out_of_the_hash():
    recorded = json.loads(FIXTURE.read_text())
    assert recorded["_extra"]["embed_small_batch"] == recorded["demo"]["embed"]
    assert recorded["_extra"]["lengths_pool"] == recorded["demo"]["lengths"]


def test_unhashed_keys_are_keys_of_their_spec():
    from curation_assets.stages.registry import all_kinds

    for name, kind in all_kinds().items():
        fields = set(kind.spec.model_fields)
        assert kind.spec.UNHASHED <= fields, (name, kind.spec.UNHASHED - fields)
