"""Loading the pipelines' definitions imports no deep-learning library (issue #20).

Every process that loads definitions (`dg check defs`, the code servers of `dg dev`, each
multiprocess step worker, `curation run`) paid ~1.9 s for `import torch` before the stage
modules imported torch-backed helpers only where a stage runs. A fresh interpreter is the
only honest check: this test process has long since imported torch through other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "sentence_transformers", "faiss")
PIPELINES = sorted((PROJECT / "curation_assets" / "defs").glob("*/defs.yaml"))

PROBE = """
import json, sys
from pathlib import Path

import curation_assets.stages.builtin
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.definitions import defs

keys = {}
for path in sys.argv[1:]:
    keys[Path(path).parent.name] = len(list(pipeline_definitions(load_pipeline_file(Path(path))).resolve_all_asset_keys()))
keys["definitions"] = len(list(defs().resolve_all_asset_keys()))
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"keys": keys, "heavy": heavy}))
"""


def probe() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}", *map(str, PIPELINES)],
        check=False,
        cwd=PROJECT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loading_definitions_imports_no_deep_learning_library() -> None:
    assert {p.parent.name for p in PIPELINES} >= {"demo", "eval"}, PIPELINES
    out = probe()
    # the probe really built each pipeline's assets (an empty load would pass trivially)
    assert all(n > 0 for n in out["keys"].values()), out["keys"]
    assert out["heavy"] == [], (
        f"loading definitions imported {out['heavy']}: import them inside the function that runs the stage"
    )
