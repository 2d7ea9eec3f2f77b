"""Synthetic DEITA-evol and AlpaGasus label tables whose true scores are known, for the
trained-scorer tests. The LLM stages that normally make these labels need the LLM server; the
tests insert the rows at the LLM stage's config hash, so that stage has nothing pending and
asks nothing, and every later stage runs for real on them."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import dagster as dg

from curation_assets.components.standalone import pipeline_definitions
from tests.support.runs import run_pipeline, write_document

TOPICS = [
    "a poem about the sea",
    "a short story about a lost dog",
    "an email asking for a day off",
    "a recipe for tomato soup",
    "a summary of the french revolution",
    "a guide to planting roses",
    "a product review of running shoes",
    "a speech for a wedding",
    "a lesson plan about fractions",
    "a cover letter for a nurse",
    "a blog post about city cycling",
    "a letter to a landlord",
    "a description of a mountain village",
    "a quiz about the solar system",
    "a toast for a retirement",
    "an essay about public libraries",
    "a song about the rain",
    "a travel plan for rome",
    "a complaint about a late train",
    "a fable about a clever fox",
]
CONSTRAINTS = [
    "use exactly three paragraphs",
    "include a metaphor about time",
    "mention a historical date",
    "write it in the second person",
    "end with a question to the reader",
    "avoid the letter z entirely",
    "add a title in capital letters",
    "cite two sources",
    "keep every sentence under twelve words",
    "include a list of five items",
]
DETAILS = [
    "It also explains why each step matters.",
    "An example makes the idea concrete.",
    "A short table compares the options.",
    "It warns about a common mistake.",
    "It closes with a clear recommendation.",
    "A quick check lets the reader verify the result.",
    "It adds background on where the practice comes from.",
    "It notes the cost and the time needed.",
]


def seed_records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "instruction": f"Write {TOPICS[i % len(TOPICS)]}"
            + (f" number {i // len(TOPICS)}" if i >= len(TOPICS) else "")
            + ".",
            "input": "",
            "output": f"Here is {TOPICS[i % len(TOPICS)]}. " + rng.choice(DETAILS),
        }
        for i in range(n)
    ]


def evol_rows(samples: dict[str, tuple[str, str]], iterations: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """DEITA-shaped chains: variant k adds k constraints (complexity) or k details (quality), so
    its true rank score is k + 1 of 1..iterations + 1."""
    rng = random.Random(seed)
    rows = []
    for sid, (instruction, response) in sorted(samples.items()):
        constraints = rng.sample(CONSTRAINTS, iterations)
        details = rng.sample(DETAILS, iterations)
        for k in range(iterations + 1):
            evolved = instruction if k == 0 else f"{instruction} Also, {'; '.join(constraints[:k])}."
            rows.append(
                {
                    "sample_id": sid,
                    "dimension": "complexity",
                    "variant": k,
                    "operation": "seed" if k == 0 else "add_constraints",
                    "instruction": evolved,
                    "response": response if k == 0 else None,
                    "score": float(k + 1),
                    "status": "ok",
                }
            )
            rows.append(
                {
                    "sample_id": sid,
                    "dimension": "quality",
                    "variant": k,
                    "operation": "seed" if k == 0 else "details",
                    "instruction": instruction,
                    "response": " ".join([response, *details[:k]]),
                    "score": float(k + 1),
                    "status": "ok",
                }
            )
    return rows


def materialize_with_labels(
    folder: Path, document: dict[str, Any], label_stage: str, table: str, rows_for: Any, *, dagster: bool = False
) -> Any:
    """Ingest, insert `rows_for(samples)` into `table` at `label_stage`'s config hash for the
    samples lacking rows there, then run every stage and selection (the label stage finds nothing
    pending): through the runner, or through Dagster with `dagster=True`; every check must pass."""
    component = write_document(folder, document)
    assets = list(pipeline_definitions(component).assets)
    if dagster:
        sources = {s["name"] for s in document["attributes"]["sources"]}
        dg.materialize([a for a in assets if a.key.path[-1] in sources], raise_on_error=True)
    else:
        run_pipeline(component, only=set())  # the ingest alone
    config_hash = component.stage_hashes[label_stage]
    with component.store.transaction() as con:
        samples = {
            sid: (ins, out)
            for sid, ins, out in con.execute(
                f"SELECT sample_id, instruction, output FROM samples s WHERE active AND NOT EXISTS (SELECT 1 FROM {table} "
                "t WHERE t.sample_id = s.sample_id AND t.stage = ? AND t.config_hash = ?)",
                [label_stage, config_hash],
            ).fetchall()
        }
        for row in rows_for(samples):
            row = {"stage": label_stage, "config_hash": config_hash, **row}
            names = list(row)
            con.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [row[n] for n in names],
            )
    if not dagster:
        return run_pipeline(component)
    result = dg.materialize(assets, raise_on_error=True)
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    assert not failed, f"asset checks failed: {failed}"
    return component
