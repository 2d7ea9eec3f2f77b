"""The cluster files of curation_assets/deploy/ agree with each other and with the pipeline schema:
the DuckLake pipeline validates and holds no DuckDB path and no password, every container that opens
the store gets the variable `password_env` names from the Secret (never a literal), every container
reads the same pipeline file and mounts the shared volume where `data_path`/`work_path` point, and
the run pods (dagster.yaml's run launcher) get the same env, secrets and volumes. The code location
module builds its job for the executor named in the environment. (The Celery executor itself runs
for real in tests/e2e/test_distributed.py, with executor-celery.yaml as its run config.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from curation_assets.components.spec import pipeline_spec_model
from curation_assets.deploy.location import executor_named, location_definitions
from curation_assets.store.config import DuckLakeStoreConfig
from tests.support.pipelines import pipeline_document

DEPLOY = Path(__file__).resolve().parents[1] / "curation_assets" / "deploy"


def manifests() -> dict[tuple[str, str], dict]:
    documents = list(yaml.safe_load_all((DEPLOY / "k8s-ducklake.yaml").read_text()))
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


def containers(objects: dict) -> list[tuple[dict, dict]]:
    """(container, pod spec) of every Deployment that runs the project's image."""
    found = []
    for (kind, _), obj in objects.items():
        if kind == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            found += [(c, spec) for c in spec["containers"] if c["image"].startswith("curation-assets")]
    return found


def test_the_ducklake_pipeline_validates_without_a_local_duckdb_or_a_password():
    objects = manifests()
    document = yaml.safe_load(objects[("ConfigMap", "curation-pipeline")]["data"]["defs.yaml"])
    spec = pipeline_spec_model().model_validate(document["attributes"])
    assert isinstance(spec.store, DuckLakeStoreConfig) and spec.duckdb_path is None
    assert "password" not in spec.store.catalog.lower() and spec.store.password_env
    assert "duckdb" not in json.dumps(list(objects.values())).lower()  # no DuckDB file anywhere


def test_every_container_gets_the_store_password_from_the_secret_and_mounts_the_shared_folder():
    objects = manifests()
    document = yaml.safe_load(objects[("ConfigMap", "curation-pipeline")]["data"]["defs.yaml"])
    store = document["attributes"]["store"]
    env_map = objects[("ConfigMap", "dagster-pipeline-env")]["data"]
    pvc = next(name for kind, name in objects if kind == "PersistentVolumeClaim")
    runners = containers(objects)
    assert {c["name"] for c, _ in runners} == {"code-server", "worker"}
    for container, pod in runners:
        env = {e["name"]: e for e in container.get("env", [])}
        for name in (store["password_env"], "DAGSTER_PG_PASSWORD"):
            assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["key"] == name
        assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["dagster-pipeline-env"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName"): m["mountPath"]
                  for m in container["volumeMounts"]}  # fmt: skip
        pipeline_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "pipeline")
        assert volumes["pipeline"]["configMap"]["name"] == "curation-pipeline"
        assert env_map["CURATION_PIPELINE"] == f"{pipeline_mount}/defs.yaml"
        for folder in (store["data_path"], store["work_path"]):
            assert folder.startswith(mounts[pvc] + "/")
    assert env_map["CURATION_EXECUTOR"] == "celery"


def test_run_pods_get_the_same_env_secrets_and_volumes():
    objects = manifests()
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    launcher = instance["run_launcher"]["config"]
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for c, _ in containers(objects) for e in c["env"]}
    assert secrets <= set(launcher["env_secrets"]) and launcher["env_config_maps"] == ["dagster-pipeline-env"]
    worker = objects[("Deployment", "curation-celery-workers")]["spec"]["template"]["spec"]
    worker_mounts = {m["name"]: m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
    for mount in launcher["volume_mounts"]:
        assert worker_mounts[mount["name"]] == mount["mount_path"]
    claims = {v["name"]: v.get("persistent_volume_claim", {}).get("claim_name") for v in launcher["volumes"]}
    assert claims["shared"] == "curation-shared"
    # artefacts on the shared volume: DAGSTER_HOME is a read-only ConfigMap
    assert instance["local_artifact_storage"]["config"]["base_dir"].startswith(worker_mounts["shared"] + "/")
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    celery = yaml.safe_load(objects[("ConfigMap", "celery-worker-config")]["data"]["celery.yaml"])
    assert celery == yaml.safe_load((DEPLOY / "executor-celery.yaml").read_text())  # workers and runs: one broker


def test_the_code_location_builds_one_job_for_the_named_executor(tmp_path):
    (tmp_path / "pool.jsonl").write_text('{"instruction": "a", "input": "", "output": "b"}\n')
    (tmp_path / "defs.yaml").write_text(
        yaml.safe_dump(
            pipeline_document(
                "loc",
                stages=[{"name": "lengths", "kind": "text_stats", "shards": 2}],
                source_format="alpaca",
                automation=None,
            )
        )
    )
    defs = location_definitions(tmp_path / "defs.yaml", "multiprocess")
    job = defs.resolve_job_def("everything")
    assert job.executor_def.name == "multiprocess"
    assert {n.name for n in job.all_node_defs} >= {"loc__lengths__shard_0_of_2", "loc__lengths__shard_1_of_2"}
    with pytest.raises(ValueError, match="expected one of multiprocess, celery, k8s"):
        executor_named("dask")
    if importlib.util.find_spec("dagster_k8s") is None:
        with pytest.raises(ImportError, match="needs the package dagster-k8s"):
            executor_named("k8s")


def test_the_broker_keeps_its_queue_on_a_volume_across_restarts():
    # with task_acks_late a running step's message lives in Redis until the step ends
    objects = manifests()
    pod = objects["Deployment", "curation-redis"]["spec"]["template"]["spec"]
    (redis,) = pod["containers"]
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    (mount,) = [m for m in redis["volumeMounts"] if m["mountPath"] == data_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects
