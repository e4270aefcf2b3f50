"""`uprise serve` as a user runs it: a real process, checked options, JSON logs, clean SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serve.api import serve_main
from tests.serve.live_server import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET_QUERY = "Premise: the secret cat sat. Hypothesis: an animal sat."


@pytest.mark.parametrize("argv,message", [
    (["--port", "99999"], "port=99999"),
    (["--upstream", "localhost:8080"], "upstream="),
    (["--max-k", "0"], "max_k=0"),
    (["--insert", "end"], "invalid choice"),
    (["--api-key-env", "SURELY_UNSET_UPRISE_VAR"], "SURELY_UNSET_UPRISE_VAR"),
])
def test_bad_options_fail_before_anything_loads(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:  # the directory does not even exist
        serve_main(["--retriever", str(tmp_path / "missing"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"uprise serve exited: {proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("uprise serve never became ready")


def test_serve_process_answers_logs_json_and_stops_on_sigterm(retriever_dir, prompt_retriever):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uprise", "serve", "--retriever",
                             str(retriever_dir), "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        resp = httpx.post(f"{url}/v1/retrieve", json={"query": SECRET_QUERY, "k": 2})
        assert [p["id"] for p in resp.json()["prompts"]] == [
            h.id for h in prompt_retriever.retrieve(SECRET_QUERY, k=2)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    # uvicorn finishes the shutdown, then exits by the signal it caught (as a shell expects)
    assert proc.returncode in (0, -signal.SIGTERM), stderr[-3000:]
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(r.get("message") == "Application shutdown complete." for r in records)
    request = next(r for r in records if r.get("path") == "/v1/retrieve")
    assert request["status"] == 200 and request["queries"] == 1
    assert len(request["prompt_ids"][0]) == 2
    assert "secret" not in stderr  # no query text unless --log-queries
