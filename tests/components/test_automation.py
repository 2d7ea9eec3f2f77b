"""Re-curation on data change: observe a changed source, and declarative automation requests
the stale assets; re-running them scores only the new samples."""

from pathlib import Path

import dagster as dg
import yaml

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from tests.support.files import write_jsonl
from tests.support.pipelines import pipeline_document


def write_pool(path: Path, n: int) -> None:
    write_jsonl(path, [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(n)])


def pipeline(tmp_path: Path, automation: dict | None = None) -> Path:
    document = pipeline_document(
        "auto",
        stages=[{"name": "lengths", "kind": "text_stats"}],
        selections=[{"name": "some", "kind": "random", "fraction": 0.5}],
        automation=automation,
    )
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_sensor_runs_by_default_and_observation_schedule_exists(tmp_path):
    write_pool(tmp_path / "pool.jsonl", 5)
    defs = pipeline_definitions(load_pipeline_file(pipeline(tmp_path)))
    sensor = defs.get_sensor_def("auto_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30  # Dagster's default
    schedule = defs.get_schedule_def("auto_observe_sources_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["auto", "lengths"])).automation_condition is not None


def test_none_turns_automation_off_and_schedule_knob_adds_a_recuration_job(tmp_path):
    write_pool(tmp_path / "pool.jsonl", 5)
    defs = pipeline_definitions(
        load_pipeline_file(
            pipeline(tmp_path, {"condition": "none", "schedule": "0 3 * * *", "observe_sources_cron": None})
        )
    )
    assert not list(defs.sensors or [])
    quick = pipeline_definitions(load_pipeline_file(pipeline(tmp_path, {"sensor_interval_seconds": 5})))
    assert quick.get_sensor_def("auto_automation").minimum_interval_seconds == 5
    assert [s.name for s in defs.schedules] == ["auto_recurate_schedule"]
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["auto", "lengths"])).automation_condition is None


def test_changed_source_makes_automation_request_the_pipeline_and_only_new_samples_are_scored(tmp_path):
    write_pool(tmp_path / "pool.jsonl", 100)
    component = load_pipeline_file(pipeline(tmp_path))
    defs = pipeline_definitions(component)
    assets = list(defs.assets)
    observe = defs.resolve_job_def("auto_observe_sources")
    with dg.instance_for_test() as instance:
        assert observe.execute_in_process(instance=instance).success
        dg.materialize(assets, instance=instance, raise_on_error=True)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        cursor = settled.cursor
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert settled.total_requested == 0  # nothing changed since the run
        write_pool(tmp_path / "pool.jsonl", 101)  # one new record (1%)
        assert observe.execute_in_process(instance=instance).success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
        assert result.get_num_requested(dg.AssetKey(["auto", "pool"])) == 1  # the changed source is re-ingested
    dg.materialize(assets, raise_on_error=True)
    with component.store.reader() as con:
        computed = [
            r[0]
            for r in con.execute(
                "SELECT rows_out FROM stage_runs WHERE stage = 'lengths' ORDER BY started_at"
            ).fetchall()
        ]
    assert computed == [100, 1]


def llm_pipeline(tmp_path: Path, automation: dict) -> dg.Definitions:
    """text_stats (cheap), an AlpaGasus judge, a selection on the judge and its export, a selection
    and export on text_stats only."""
    write_pool(tmp_path / "pool.jsonl", 5)
    document = pipeline_document(
        "auto",
        stages=[{"name": "lengths", "kind": "text_stats"}, {"name": "judge", "kind": "alpagasus"}],
        selections=[
            {"name": "accurate", "kind": "alpagasus_threshold", "stage": "judge", "threshold": 4},
            {"name": "long", "kind": "top_score", "stage": "lengths", "column": "output_chars", "fraction": 0.5},
        ],
        exports=[
            {"selection": "accurate", "path": "accurate.jsonl"},
            {"selection": "long", "path": "long.jsonl"},
        ],
        automation=automation,
    )
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return pipeline_definitions(load_pipeline_file(path))


LLM_SIDE = ("judge", "accurate", "export_accurate")
CHEAP_SIDE = ("pool", "lengths", "long", "export_long")


def test_llm_stages_and_what_reads_them_wait_for_a_click_by_default(tmp_path):
    defs = llm_pipeline(tmp_path, {})
    graph = defs.resolve_asset_graph()
    for name in LLM_SIDE:
        node = graph.get(dg.AssetKey(["auto", name]))
        assert node.automation_condition is None, name
        assert "Automation: off" in node.description and "llm_stages: eager" in node.description, name
    for name in CHEAP_SIDE:
        node = graph.get(dg.AssetKey(["auto", name]))
        assert node.automation_condition is not None and "Automation: off" not in (node.description or ""), name
    assert defs.get_sensor_def("auto_automation").default_status == dg.DefaultSensorStatus.RUNNING


def test_llm_stages_opt_in_to_automation(tmp_path):
    graph = llm_pipeline(tmp_path, {"llm_stages": "eager"}).resolve_asset_graph()
    for name in (*LLM_SIDE, *CHEAP_SIDE):
        node = graph.get(dg.AssetKey(["auto", name]))
        assert node.automation_condition is not None and "Automation: off" not in (node.description or ""), name
    # cheap stages off, LLM stages on a cron: each gets its own condition, and the sensor exists
    defs = llm_pipeline(tmp_path, {"condition": "none", "llm_stages": "on_cron"})
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["auto", "lengths"])).automation_condition is None
    assert "cron" in str(graph.get(dg.AssetKey(["auto", "judge"])).automation_condition).lower()
    assert defs.get_sensor_def("auto_automation") is not None
