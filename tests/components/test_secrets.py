"""Secrets stay secret: an API key pasted into the YAML is refused without being repeated, URLs
lose their credentials wherever they are stored or shown, and a key never travels over plain
http:// to another machine. The judged run is a real one against the packaged llama.cpp judge."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from click.testing import CliRunner
from dagster._serdes import serialize_value

from curation_assets.cli import main as cli
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.llm.client import ChatRequest, LLMClient
from curation_assets.llm.endpoint import LLMConfigError, LLMEndpointSpec
from curation_assets.llm.local_server import free_port
from tests.components.test_dg_cli import _bad_project
from tests.support.dg import cli_output, run_cli
from tests.support.files import write_jsonl
from tests.support.pipelines import pipeline_document

KEY = "sk-proj-Zq81Xw4TkLm0Np7Rv2Ys5Ub9"  # looks like a real key on purpose
PASSWORD = "urlpw5c7e9a1b3d"  # lower case and digits: survives any slug made of the URL


def pipeline(stage_llm: dict, *, extra_stages: tuple[dict, ...] = ()) -> dict:
    return pipeline_document(
        "judge",
        stages=[
            {
                "name": "judge",
                "kind": "alpagasus",
                "max_tokens": 8,
                "parse_retries": 0,
                "structured_output": "llama_cpp",
                "llm": stage_llm,
            },
            *extra_stages,
        ],
    )


def write_pool(folder: Path, n: int = 3) -> None:
    write_jsonl(
        folder / "pool.jsonl",
        [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{2 * i}."} for i in range(n)],
    )


def check(folder: Path, document: dict) -> tuple[int, str]:
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(cli, ["check", str(path)])
    return result.exit_code, result.output


# ---------------------------------------------------------------- validation errors


@pytest.mark.parametrize("pasted", [KEY, "sk_live_Zq81Xw4TkLm0Np7Rv2Ys5Ub9", "AbCdEf0123456789GhIjKl"])
def test_key_pasted_into_api_key_env_is_refused_without_being_repeated(tmp_path: Path, pasted: str) -> None:
    write_pool(tmp_path)
    code, output = check(tmp_path, pipeline({"base_url": "https://api.example.com/v1", "api_key_env": pasted}))
    assert code != 0
    assert "stages.0.llm.api_key_env" in output and "looks like an API key" in output
    assert pasted not in output


def test_key_in_an_unknown_or_typed_field_is_not_repeated(tmp_path: Path) -> None:
    write_pool(tmp_path)
    code, output = check(tmp_path, pipeline({"api_key": KEY, "max_concurrency": KEY}))
    assert code != 0
    assert "stages.0.llm.api_key" in output and "stages.0.llm.max_concurrency" in output
    assert KEY not in output


def test_url_with_credentials_is_shown_redacted(tmp_path: Path) -> None:
    write_pool(tmp_path)
    url = f"ftp://alice:{PASSWORD}@files.example.com/v1?token=querysecret"
    code, output = check(tmp_path, pipeline({"base_url": url}))
    assert code != 0 and "base_url must be an http:// or https:// URL" in output
    assert "ftp://***@files.example.com/v1?***" in output
    assert PASSWORD not in output and "querysecret" not in output and "alice" not in output


def test_environment_variable_names_are_still_accepted(tmp_path: Path) -> None:
    write_pool(tmp_path)
    for name in ("OPENAI_API_KEY", "MY_TEAM_JUDGE_API_KEY_2024_05_01", "judge_key"):
        code, output = check(tmp_path, pipeline({"base_url": "https://api.example.com/v1", "api_key_env": name}))
        assert code == 0, output


def test_dg_check_defs_does_not_repeat_a_pasted_key(tmp_path: Path, cli_env) -> None:
    yaml_file = _bad_project(
        tmp_path,
        yaml.safe_dump(
            pipeline_document(
                "bad",
                stages=[
                    {
                        "name": "judge",
                        "kind": "alpagasus",
                        "llm": {"base_url": f"https://u:{PASSWORD}@api.example.com/v1", "api_key_env": KEY},
                    }
                ],
                sources=[{"name": "records", "path": "records.jsonl"}],
                automation=None,
            )
        ),
    )
    result = run_cli(["dg", "check", "defs"], tmp_path, cli_env)
    output = cli_output(result)
    assert result.returncode != 0, output
    assert f"{yaml_file}:" in output and "looks like an API key" in output
    assert KEY not in output and PASSWORD not in output


# ---------------------------------------------------------------- no key over plain http


def test_plain_http_to_another_host_with_a_key_is_refused_at_load(tmp_path: Path) -> None:
    write_pool(tmp_path)
    code, output = check(
        tmp_path,
        pipeline({"base_url": f"http://bob:{PASSWORD}@judge.example.com:8000/v1", "api_key_env": "JUDGE_API_KEY"}),
    )
    assert code != 0
    assert (
        "stage 'judge': refusing to send the API key from $JUDGE_API_KEY over plain http:// to judge.example.com"
        in output
    )
    assert PASSWORD not in output
    for url in (
        "https://judge.example.com/v1",
        "http://127.0.0.1:8000/v1",
        "http://localhost:8000/v1",
        "http://[::1]:8000/v1",
    ):
        code, output = check(tmp_path, pipeline({"base_url": url, "api_key_env": "JUDGE_API_KEY"}))
        assert code == 0, (url, output)
    code, output = check(tmp_path, pipeline({"base_url": "http://judge.example.com/v1"}))  # no key: allowed
    assert code == 0, output


def _this_machines_lan_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent; picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_client_never_sends_a_key_over_plain_http_to_a_non_loopback_address(monkeypatch) -> None:
    address = _this_machines_lan_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    received: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.headers.get("Authorization", ""))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("JUDGE_API_KEY", KEY)
        # built in code, past the YAML checks: the client refuses by itself
        endpoint = LLMEndpointSpec.model_construct(
            **{
                **LLMEndpointSpec().model_dump(),
                "base_url": f"http://{address}:{server.server_port}/v1",
                "api_key_env": "JUDGE_API_KEY",
                "max_retries": 0,
            }
        )
        client = LLMClient(endpoint, None, stage="judge")
        with pytest.raises(LLMConfigError, match="stage 'judge': refusing to send the API key"):
            client.complete_all([ChatRequest(({"role": "user", "content": "hi"},), {"max_tokens": 1})])
    finally:
        server.shutdown()
        server.server_close()
    assert received == []


# ---------------------------------------------------------------- a judged run leaves no secret behind


def _grep_files(folder: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {needle}" for needle in needles if needle.encode() in data]
    return hits


@pytest.mark.e2e
def test_judged_run_stores_and_logs_neither_key_nor_url_password(
    tmp_path: Path, llm_server, monkeypatch, capfd
) -> None:
    write_pool(tmp_path)
    port = llm_server.base_url.rsplit(":", 1)[1].split("/")[0]
    dead = free_port()  # nothing listens: this stage fails, and its error must not show the password
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    monkeypatch.setenv("JUDGE_URL", f"http://judgeuser:{PASSWORD}@127.0.0.1:{port}/v1")
    monkeypatch.setenv("DEAD_URL", f"http://judgeuser:{PASSWORD}@127.0.0.1:{dead}/v1")
    llm = {
        "base_url": "{{ env.JUDGE_URL }}",
        "api_key_env": "JUDGE_API_KEY",
        "model": "smollm2-135m-instruct",
        "max_concurrency": 2,
        "backoff_s": 0.05,
        "backoff_max_s": 0.1,
        "max_retries": 1,
    }
    broken = {
        "name": "unreachable",
        "kind": "alpagasus",
        "max_tokens": 8,
        "parse_retries": 0,
        "llm": {**llm, "base_url": "{{ env.DEAD_URL }}"},
    }
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(pipeline(llm, extra_stages=(broken,))))
    home = tmp_path / "dagster_home"
    home.mkdir()

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        definitions = pipeline_definitions(load_pipeline_file(path))
        result = dg.materialize(
            [*definitions.assets, *(definitions.asset_checks or [])], instance=instance, raise_on_error=False
        )
        events = instance.all_logs(result.run_id)
        failures = [e.event_specific_data.error for e in result.get_step_failure_events()]
        runs_and_tags = [serialize_value(r) for r in instance.get_runs()]
    assert not result.success and len(failures) == 1  # only the unreachable endpoint fails
    messages = []
    error = failures[0]
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert any(f"http://***@127.0.0.1:{dead}/v1" in m for m in messages), messages

    with duckdb.connect(str(tmp_path / "judge.duckdb"), read_only=True) as con:
        judged = con.execute(
            "SELECT count(*) FROM judge WHERE status <> 'request_rejected' AND NOT "
            "list_has_any(answers, ['']) AND NOT answers[1] LIKE '[request failed]%'"
        ).fetchone()[0]
        config = con.execute("SELECT config FROM stage_runs WHERE stage = 'judge'").fetchone()[0]
        tables = [
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        dumped = {t: repr(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    assert judged == 3  # the judge answered every sample: this was a real run
    assert json.loads(config)["llm"]["base_url"] == f"http://***@127.0.0.1:{port}/v1"

    leaks = [f"table {t}: {needle}" for t, text in dumped.items() for needle in (KEY, PASSWORD) if needle in text]
    leaks += [
        f"event {e.dagster_event_type}: {needle}"
        for e in events
        for needle in (KEY, PASSWORD)
        if needle in serialize_value(e)
    ]
    leaks += [f"run record: {needle}" for text in runs_and_tags for needle in (KEY, PASSWORD) if needle in text]
    captured = capfd.readouterr()
    leaks += [f"output: {needle}" for needle in (KEY, PASSWORD) if needle in captured.out + captured.err]
    assert any(p.suffix == ".err" and p.stat().st_size for p in home.rglob("*")), "no compute logs to grep"
    leaks += _grep_files(home, [KEY, PASSWORD])  # event log database, compute logs, run storage
    leaks += _grep_files(tmp_path, [KEY, PASSWORD])  # DuckDB file, staging and artefact folders too
    assert leaks == [], leaks
