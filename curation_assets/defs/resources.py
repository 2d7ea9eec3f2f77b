"""Resources the project's pipelines share (a Dagster `resources.py` defs module).

Pipelines name them in their YAML: `store: {resource: curation_store}` and
`llm: {resource: judge_llm}`. Point `judge_llm` at a real model here, once, for every pipeline:

    LLMEndpoint(base_url="https://api.openai.com/v1", model="gpt-4o-mini",
                api_key=dg.EnvVar("OPENAI_API_KEY"))
"""

import dagster as dg

from curation_assets.components.resources import CurationStore, LLMEndpoint


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            # one DuckDB file per pipeline under .curation/ in the project folder
            "curation_store": CurationStore(path=".curation/{pipeline}.duckdb"),
            # the packaged SmolLM2-135M served by `curation llm-server` (make ui / make demo start it)
            "judge_llm": LLMEndpoint(base_url="http://127.0.0.1:8765/v1", model="smollm2-135m-instruct"),
        }
    )
