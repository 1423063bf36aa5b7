"""A real job through a real fleet: coordinator + two agents, ZeroMQ, llama.cpp workers.

Also the bad-input paths against the running coordinator: refused job specs store
nothing, a wrong join token is refused, malformed wire messages never stop the hub.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zmq

from coordinator.client import Client, ClientError
from coordinator.demo import LocalFleet, wait_for, workers_ready
from node_agent import curve
from node_agent.hardware import hardware_facts
from node_agent.protocol import PROTOCOL_VERSION, Heartbeat, Register, encode
from tests.integration.conftest import TINY, TOKEN, store_rows
from tests.support.tiny_gguf import build_vocab, write_tiny_gguf

pytestmark = pytest.mark.integration

LIMIT = 8


def _wait_job(client: Client, job_id: int, *, timeout_s: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job["state"] != "running":
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still running after {timeout_s} s: {job}")


def test_job_runs_on_real_agents_and_stores_one_row_per_item(
        fleet: LocalFleet, client: Client) -> None:
    job = client.submit({"name": "it-classification", "models": [TINY],
                         "tasks": [{"task": "classification",
                                    "dataset": "builtin:classification"}],
                         "params": {"max_tokens": 4}, "limit": LIMIT, "repeats": 2})
    assert job["total"] == LIMIT * 2
    final = _wait_job(client, job["id"])
    assert final["state"] == "finished"
    assert final["done"] == LIMIT * 2 and final["failed"] == 0

    rows = store_rows(fleet, "SELECT * FROM work_items WHERE job_id = ?", job["id"])
    assert len(rows) == LIMIT * 2
    keys = {(r["item_key"], r["repeat"]) for r in rows}
    assert len(keys) == LIMIT * 2, "each (item, repeat) is stored exactly once"
    node_ids = {n["id"] for n in client.nodes()}
    for row in rows:
        assert row["status"] == "done"
        assert row["node_id"] in node_ids
        assert row["lease_id"] is None
        assert 0 < row["ttft_s"] <= row["e2e_s"]
        assert row["prompt_tokens"] > 100, "the few-shot prompt reached the worker"
        assert 0 < row["completion_tokens"] <= 4
        assert row["peak_rss_mb"] > 0
        assert json.loads(row["score"])["valid"] in (True, False)

    # random weights rarely sample end-of-text: most completions run to max_tokens
    assert max(r["completion_tokens"] for r in rows) == 4

    results = client.results(job["id"])
    (summary,) = results["summary"]
    assert summary["model"] == TINY and summary["task"] == "classification"
    assert summary["done"] == LIMIT * 2
    for name in ("accuracy", "macro_f1", "invalid_rate"):
        metric = summary["metrics"][name]
        assert metric["low"] <= metric["value"] <= metric["high"]
        assert 0.0 <= metric["low"] and metric["high"] <= 1.0
    invalid = sum(not json.loads(r["score"])["valid"] for r in rows) / len(rows)
    assert summary["metrics"]["invalid_rate"]["value"] == pytest.approx(invalid)
    assert summary["e2e_p50_s"] > 0
    assert sum(r["done"] for r in results["by_node"]) == LIMIT * 2
    assert len(results["records"]) == LIMIT * 2


def test_agents_report_health_and_hardware(fleet: LocalFleet, client: Client) -> None:
    wait_for("metrics from every node", lambda: all(
        n["metrics"] is not None for n in client.nodes()), fleet=fleet, timeout_s=30)
    nodes = [n for n in client.nodes() if n["name"].startswith("local-")]
    assert {n["name"] for n in nodes} == {"local-1", "local-2"}
    for node in nodes:
        assert node["state"] in ("ready", "busy")
        assert node["facts"]["cores"] >= 1
        assert node["facts"]["ram_mb"] > 0
        assert node["facts"]["llama_cpp_version"]
        assert 0 <= node["metrics"]["mem_used_percent"] <= 100
        assert [w["model"] for w in node["workers"]] == [TINY]


BAD_SPECS = [
    ({"name": "x", "models": [], "tasks": [{"task": "classification",
                                            "dataset": "builtin:classification"}]},
     "models"),
    ({"name": "x", "models": [TINY], "tasks": [{"task": "classification",
                                               "dataset": "builtin:classification"}],
      "params": {"temperature": -1}}, "params.temperature"),
    ({"name": "x", "models": ["tiny-lama"], "tasks": [{"task": "classification",
                                                       "dataset": "builtin:classification"}]},
     "did you mean tiny-llama"),
    ({"name": "x", "models": [TINY], "tasks": [{"task": "classification",
                                               "dataset": "builtin:nope"}]},
     "builtin:classification"),
    ({"name": "x", "models": [TINY], "tasks": [{"task": "clasification",
                                               "dataset": "builtin:classification"}]},
     "did you mean classification"),
    ({"name": "x", "models": [TINY], "tasks": [], "surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("spec", "named"), BAD_SPECS)
def test_bad_job_spec_is_refused_and_stores_nothing(
        fleet: LocalFleet, client: Client, spec: dict[str, object], named: str) -> None:
    before = store_rows(fleet, "SELECT COUNT(*) AS n FROM jobs")[0]["n"]
    items_before = store_rows(fleet, "SELECT COUNT(*) AS n FROM work_items")[0]["n"]
    with pytest.raises(ClientError) as refused:
        client.submit(spec)
    assert "(422)" in str(refused.value)
    assert named in str(refused.value)
    assert store_rows(fleet, "SELECT COUNT(*) AS n FROM jobs")[0]["n"] == before
    assert store_rows(fleet, "SELECT COUNT(*) AS n FROM work_items")[0]["n"] == items_before


def test_agent_with_wrong_token_is_refused(fleet: LocalFleet, client: Client) -> None:
    agent = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "agent", "--coordinator",
         f"127.0.0.1:{fleet.hub_port}", "--token", "not-the-token", "--name", "intruder",
         "--coordinator-key", str(fleet.hub_key_file),
         "--cache-dir", str(fleet.data_dir / "intruder")],
        capture_output=True, text=True, timeout=60)
    assert agent.returncode == 3
    assert "invalid join token" in agent.stderr
    assert "intruder" not in {n["name"] for n in client.nodes()}


@contextlib.contextmanager
def _hub_socket(fleet: LocalFleet, *, keys: curve.KeyPair | None = None
                ) -> Iterator[zmq.Socket[bytes]]:
    """A raw DEALER connected to the hub (a CURVE client with the hub's key and, unless
    given, a fresh key of its own), as a (mis)behaving agent would use."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    (keys or curve.KeyPair(*zmq.curve_keypair())).apply_client(
        sock, server_key=curve.parse_public_key(str(fleet.hub_key_file)))
    hub_port = fleet.hub_port
    try:
        sock.connect(f"tcp://127.0.0.1:{hub_port}")
        yield sock
    finally:
        sock.close()
        context.term()


def _exchange(fleet: LocalFleet, frames: list[bytes]) -> dict[str, object]:
    with _hub_socket(fleet) as sock:
        sock.send_multipart(frames)
        return _reply(sock)


def _reply(sock: zmq.Socket[bytes], *, skip: tuple[str, ...] = ()) -> dict[str, object]:
    while True:
        reply: dict[str, object] = json.loads(sock.recv_multipart()[0])
        if reply["type"] not in skip:
            return reply


MALFORMED = [
    ([b"not json at all"], "error"),
    ([b'{"type": "launch_missiles"}'], "error"),
    ([b'{"type": "heartbeat", "seq": "one"}'], "error"),
    ([b'{"type": "heartbeat", "seq": 1}', b"extra", b"frames"], "error"),
    ([b'{"type": "heartbeat", "seq": 1}'], "rejected"),  # valid, but not registered
    ([json.dumps({"type": "work_request", "model": TINY, "slots": 1}).encode()], "rejected"),
]


def test_malformed_and_unauthenticated_messages_never_stop_the_hub(
        fleet: LocalFleet, client: Client) -> None:
    for frames, expected in MALFORMED:
        reply = _exchange(fleet, frames)
        assert reply["type"] == expected, (frames, reply)
    fleet.check_alive()
    assert client.health()["status"] == "ok"
    # the fleet still works after the garbage: a small job completes
    job = client.submit({"name": "after-garbage", "models": [TINY],
                         "tasks": [{"task": "classification",
                                    "dataset": "builtin:classification"}],
                         "params": {"max_tokens": 2}, "limit": 2})
    assert _wait_job(client, job["id"])["state"] == "finished"
    leased = store_rows(fleet, "SELECT COUNT(*) AS n FROM work_items WHERE job_id = ? AND "
                        "lease_id IS NOT NULL", job["id"])
    assert leased[0]["n"] == 0


def test_silent_node_is_dropped_and_told_to_register_again(fleet: LocalFleet,
                                                          client: Client) -> None:
    """The hub forgets a peer silent for liveness x interval (1 s x 3 here)."""
    with _hub_socket(fleet) as sock:
        sock.send_multipart(encode(Register(protocol=PROTOCOL_VERSION, token=TOKEN,
                                            name="ghost", facts=hardware_facts())))
        assert _reply(sock)["type"] == "welcome"
        sock.send_multipart(encode(Heartbeat(seq=0)))
        wait_for("the ghost to be declared unreachable", lambda: any(
            n["name"] == "ghost" and n["state"] == "unreachable" for n in client.nodes()),
            fleet=fleet, timeout_s=30)
        while sock.poll(timeout=2500):  # the hub heartbeats live peers every second
            sock.recv_multipart()       # ... and stops once it has dropped this one
        sock.send_multipart(encode(Heartbeat(seq=1)))
        reply = _reply(sock, skip=("heartbeat", "desired_workers"))
        assert reply["type"] == "rejected" and reply["reregister"] is True


def test_status_page_shows_nodes_and_jobs(fleet: LocalFleet, client: Client) -> None:
    page = httpx.get(f"{fleet.api_url}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for node in client.nodes():
        assert f"<td>{node['name']}</td>" in page.text
    for job in client.jobs():
        assert f"<td>{job['name']}</td>" in page.text
        assert f"{job['done']} / {job['total']}" in page.text


def _cli(fleet: LocalFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args, "--api",
                           fleet.api_url], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_report_formats_and_regression_gate_through_the_cli(
        fleet: LocalFleet, client: Client, tmp_path: Path) -> None:
    spec = {"models": [TINY], "params": {"max_tokens": 3}, "limit": 6,
            "tasks": [{"task": "classification", "dataset": "builtin:classification"}]}
    base = client.submit({"name": "gate-base", **spec})["id"]
    candidate = client.submit({"name": "gate-candidate", **spec})["id"]
    assert _wait_job(client, base)["state"] == _wait_job(client, candidate)["state"] \
        == "finished"

    html = _cli(fleet, "report", str(base), "--format", "html", "--out", str(tmp_path / "r"))
    assert html.returncode == 0, html.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    pngs = sorted((tmp_path / "r").glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert all(p.name in page for p in pngs)

    rows = list(csv.DictReader(io.StringIO(_cli(fleet, "report", str(base), "--format",
                                                "csv").stdout)))
    assert {r["metric"] for r in rows} == {"accuracy", "macro_f1", "invalid_rate"}
    latex = _cli(fleet, "report", str(base), "--format", "latex").stdout
    assert "\\toprule" in latex and "tiny-llama" in latex

    # |delta accuracy| <= 1, so "< 2" holds for the whole interval and "< -2" never does
    held = _cli(fleet, "compare", str(base), str(candidate), "--fail-on",
                "classification.accuracy < 2")
    assert held.returncode == 1 and "regression" in held.stderr
    passed = _cli(fleet, "compare", str(base), str(candidate), "--fail-on",
                  "classification.accuracy < -2")
    assert passed.returncode == 0 and "accuracy" in passed.stdout
    unknown = _cli(fleet, "compare", str(base), str(candidate), "--fail-on",
                   "classification.acuracy < 0")
    assert unknown.returncode == 2 and "classification.accuracy" in unknown.stderr


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_chat_prompting_uses_the_models_own_template(
        fleet: LocalFleet, client: Client, tmp_path: Path) -> None:
    chat_model = write_tiny_gguf(tmp_path / "tiny-chat.gguf", seed=1, chat_template=CHATML)
    added = client.add_model(name="tiny-chat", path=str(chat_model), threads=1, n_ctx=2048)
    assert added["chat_template"] is True
    wait_for("workers for the chat model", lambda: workers_ready(client, "tiny-chat", 2) >= 2,
             fleet=fleet, timeout_s=120)
    job = client.submit({"name": "chat", "models": ["tiny-chat"], "limit": 2,
                         "params": {"prompting": "chat", "max_tokens": 3},
                         "tasks": [{"task": "ner", "dataset": "builtin:ner"}]})
    assert _wait_job(client, job["id"])["state"] == "finished"
    prompts = [r["prompt"] for r in store_rows(
        fleet, "SELECT prompt FROM work_items WHERE job_id = ?", job["id"])]
    assert len(prompts) == 2
    for prompt in prompts:
        assert prompt.startswith("<|im_start|>user\nList the named entities")
        assert prompt.endswith("Entities:<|im_end|>\n<|im_start|>assistant\n")
        assert prompt.count("Sentence:") == 1, "zero-shot: no few-shot examples"

    with pytest.raises(ClientError, match="params.prompting: model 'tiny-llama' has no chat"):
        client.submit({"name": "chat-base", "models": [TINY], "params": {"prompting": "chat"},
                       "tasks": [{"task": "ner", "dataset": "builtin:ner"}]})


def test_a_model_in_the_fleet_judges_rag_answers(fleet: LocalFleet, client: Client) -> None:
    rag = client.submit({"name": "rag-to-judge", "models": [TINY], "limit": 3,
                         "params": {"max_tokens": 4},
                         "tasks": [{"task": "rag", "dataset": "builtin:rag"}]})
    assert _wait_job(client, rag["id"])["state"] == "finished"
    judged = _cli(fleet, "judge", str(rag["id"]), "--model", TINY)
    assert judged.returncode == 0, judged.stderr
    judge_job = max(j["id"] for j in client.jobs())
    final = _wait_job(client, judge_job)
    assert final["state"] == "finished" and final["total"] == 3
    (row,) = client.results(judge_job)["summary"]
    assert row["task"] == "rag_judge" and row["done"] == 3
    failures = row["metrics"]["parse_failure_rate"]["value"]
    assert 0.0 <= failures <= 1.0  # random weights rarely say yes/no: counted, never NaN
    assert all(math.isfinite(m["value"]) for m in row["metrics"].values())


def test_perplexity_from_the_workers_token_logprobs(fleet: LocalFleet, client: Client) -> None:
    job = client.submit({"name": "ppl", "models": [TINY], "limit": 3,
                         "tasks": [{"task": "perplexity", "dataset": "builtin:perplexity"}]})
    assert _wait_job(client, job["id"])["state"] == "finished"
    (row,) = client.results(job["id"])["summary"]
    perplexity = row["metrics"]["perplexity"]
    # random weights are close to uniform over the vocabulary: perplexity near its size
    vocab = len(build_vocab()[0])
    assert vocab / 4 < perplexity["value"] < vocab * 4, perplexity
    assert perplexity["low"] <= perplexity["value"] <= perplexity["high"]
    records = client.results(job["id"])["records"]
    assert all(json.loads(r["output"])["tokens"] > 20 for r in records)


def test_cancel_stops_a_running_job_on_the_fleet(fleet: LocalFleet, client: Client) -> None:
    job = client.submit({"name": "to-cancel", "models": [TINY], "repeats": 5,
                         "params": {"max_tokens": 4},
                         "tasks": [{"task": "ner", "dataset": "builtin:ner"}]})
    cancelled = _cli(fleet, "cancel", str(job["id"]))
    assert cancelled.returncode == 0, cancelled.stderr
    view = client.job(job["id"])
    assert view["state"] == "cancelled" and view["pending"] == 0
    assert view["done"] + view["cancelled"] + view["failed"] == view["total"] == 142 * 5
    assert view["cancelled"] > 0
    time.sleep(2)  # in-flight leases come back; none may be recorded after the cancel
    assert client.job(job["id"])["done"] == view["done"]
    scraped = httpx.get(f"{fleet.api_url}/metrics", timeout=10).text
    assert 'slmfleet_jobs{state="cancelled"} 1.0' in scraped
    assert 'slmfleet_nodes{state="ready"}' in scraped or 'slmfleet_nodes{state="busy"}' in scraped


def test_a_model_cache_too_small_for_the_model_is_a_node_error(fleet: LocalFleet,
                                                                client: Client) -> None:
    process = fleet.spawn_agent("tight-cache", "--runtime", "process", "--cache-limit-mb", "1")
    try:
        def errors() -> str:
            return " ".join(e for n in client.nodes() if n["name"] == "tight-cache"
                            for e in n["errors"])

        wait_for("the cache limit to be reported",
                 lambda: "does not fit the model cache limit of 1 MiB" in errors(),
                 fleet=fleet, timeout_s=60)
        assert not list((fleet.data_dir / "tight-cache" / "models").glob("*.gguf"))
    finally:
        process.terminate()
        process.wait(timeout=30)
        fleet.processes.remove(process)
