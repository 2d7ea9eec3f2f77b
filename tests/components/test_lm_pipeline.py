"""The lm_loss stage on a tiny random Llama, through the runner; a failing model through Dagster."""

from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.models.chat_format import encode_conversation
from tests.support.files import write_pool
from tests.support.models import build_tiny_causal_lm
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document, run_pipeline


def pipeline(tmp_path: Path, model: Path, stages: list[dict]) -> Path:
    document = pipeline_document(
        "lm",
        stages=stages,
        selections=[
            {"name": "hardest", "kind": "top_score", "stage": stages[0]["name"], "column": "loss", "budget": 5}
        ],
        automation=None,
    )
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_lm_loss_matches_transformers_loss_and_batching_does_not_matter(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 23)
    path = pipeline(
        tmp_path,
        tiny_lm,
        [
            {"name": "loss", "kind": "lm_loss", "model": str(tiny_lm), "batch_size": 4, "max_length": 64},
            {"name": "loss_one_by_one", "kind": "lm_loss", "model": str(tiny_lm), "batch_size": 1, "max_length": 64},
        ],
    )
    component = run_pipeline(load_pipeline_file(path))
    with component.store.reader() as con:
        rows = con.execute(
            "SELECT l.sample_id, l.loss, l.perplexity, l.n_response_tokens, s.messages, b.loss "
            "FROM lm_loss l JOIN samples s USING (sample_id) "
            "JOIN lm_loss b ON b.sample_id = l.sample_id AND b.stage = 'loss_one_by_one' "
            "WHERE l.stage = 'loss'"
        ).fetchall()
        empty = con.execute("SELECT stats->>'empty_response' FROM stage_runs WHERE stage = 'loss'").fetchall()[0][0]
    assert len(rows) == 24
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    for _, loss, perplexity, n_response, messages, loss_unbatched in rows:
        sample = encode_conversation(tokenizer, messages, 64)
        with torch.no_grad():
            reference = model(input_ids=torch.tensor([sample.input_ids]), labels=torch.tensor([sample.labels])).loss
        assert loss == pytest.approx(reference.item(), rel=1e-4)
        assert loss_unbatched == pytest.approx(loss, rel=1e-4)
        assert perplexity == pytest.approx(torch.exp(reference).item(), rel=1e-4)
        assert n_response == sample.n_response_tokens
    assert int(empty) == 0  # an empty answer still has its end-of-turn token to score


def test_input_selection_limits_an_expensive_stage(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 30)
    document = yaml.safe_load(
        pipeline(
            tmp_path,
            tiny_lm,
            [
                {
                    "name": "loss",
                    "kind": "lm_loss",
                    "model": str(tiny_lm),
                    "max_length": 64,
                    "input_selection": "first_ten",
                }
            ],
        ).read_text()
    )
    document["attributes"]["selections"].insert(0, {"name": "first_ten", "kind": "random", "budget": 10})
    component = run_document(tmp_path, document)
    with component.store.reader() as con:
        scored = {r[0] for r in con.execute("SELECT sample_id FROM lm_loss").fetchall()}
        members = {
            r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'first_ten'").fetchall()
        }
        hardest = {r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'hardest'").fetchall()}
    assert scored == members and hardest <= members and len(hardest) == 5


def test_tokenizer_without_chat_template_fails_with_the_fix(tmp_path):
    folder = build_tiny_causal_lm(tmp_path, chat_template=None)
    write_pool(tmp_path / "pool.jsonl", 3)
    component = load_pipeline_file(
        pipeline(tmp_path, folder, [{"name": "loss", "kind": "lm_loss", "model": str(folder)}])
    )
    result = dg.materialize(list(pipeline_definitions(component).assets), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.event_specific_data.error
    cause = error.cause or error
    assert cause.cls_name == "ChatTemplateError" and "chat_template" in cause.message and str(folder) in cause.message
