"""The RAG judge: verdict parsing, prompts, aggregation without NaN, and the judge API."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator import store as st
from coordinator.datasets.loader import load_builtin
from coordinator.errors import JobSpecError
from coordinator.evaluation.judge import parse_verdict
from coordinator.evaluation.tasks import Scored, get_task

JUDGE = get_task("rag_judge")


@pytest.mark.parametrize(("output", "verdict"), [
    (" yes", True), ("Yes.", True), ("no", False), (" No, the answer is wrong", False),
    ("Correct", True), ("incorrect", False), ("TRUE", True), ("\n\nno\n", False),
    ("", None), ("maybe", None), ("The answer is yes", None), ("yesterday", None),
])
def test_parse_verdict(output: str, verdict: bool | None) -> None:
    assert parse_verdict(output) is verdict


def test_judge_prompts_show_the_examples_then_the_answer_to_judge() -> None:
    (item,) = JUDGE.plan_answers([{  # type: ignore[attr-defined]
        "key": "m/rag-1/r0", "question": "When does the ferry leave?",
        "answers": ["07:15", "7.15 a.m."], "candidate": "at 7:15", "exact_match": 0.0}])
    assert item.item_key == "m/rag-1/r0"
    assert item.prompt.count("Correct: yes") == 1 and item.prompt.count("Correct: no") == 1
    assert item.prompt.endswith("Question: When does the ferry leave?\nReference: 07:15 | "
                                "7.15 a.m.\nCandidate: at 7:15\nCorrect:")
    assert "Correct: yes" not in item.zero_shot


def test_an_empty_answer_is_still_judged() -> None:
    (item,) = JUDGE.plan_answers([{  # type: ignore[attr-defined]
        "key": "k", "question": "q?", "answers": ["a"], "candidate": "", "exact_match": 0.0}])
    assert "Candidate: (no answer)\nCorrect:" in item.prompt


def _scored(output: str, exact_match: float) -> Scored:
    reference = {"exact_match": exact_match, "candidate": "x"}
    prediction, score = JUDGE.score_item(output, reference)
    return Scored(prediction=prediction, reference=reference, score=score)


def test_aggregate_counts_parse_failures_and_agreement() -> None:
    items = [_scored("yes", 1.0), _scored("no", 1.0), _scored("yes", 0.0),
             _scored("no", 0.0), _scored("hmm", 1.0)]
    result = JUDGE.aggregate(items)
    assert result == {"parse_failure_rate": pytest.approx(1 / 5),
                      "judged_correct": pytest.approx(2 / 4),
                      "agreement_with_em": pytest.approx(2 / 4)}


def test_no_parsable_verdict_gives_no_nan() -> None:
    result = JUDGE.aggregate([_scored("hmm", 1.0), _scored("", 0.0)])
    assert result == {"parse_failure_rate": 1.0}
    assert all(not math.isnan(v) for v in result.values())


def test_the_judge_does_not_plan_from_a_dataset() -> None:
    with pytest.raises(JobSpecError, match="slmfleet judge JOB"):
        JUDGE.plan(load_builtin("rag"), limit=1, seed=0)


@pytest.fixture
def rag_job(store: st.Store, tmp_path: Path) -> int:
    st.add_model(store, name="cand", sha256="1" * 64, size=1, path="/x", threads=1, n_ctx=2048)
    st.add_model(store, name="judge", sha256="2" * 64, size=1, path="/y", threads=1,
                 n_ctx=2048)
    from coordinator.jobs import submit_job

    job = submit_job(store, {"name": "rag", "models": ["cand"], "limit": 3,
                             "tasks": [{"task": "rag", "dataset": "builtin:rag"}]})
    rag = get_task("rag")
    for _ in range(2):  # finish two of the three items
        item = st.lease_next(store, model="cand", node_id=1, lease_s=60)
        assert item is not None
        st.complete_item(store, item_id=item.id, lease_id=item.lease_id or "", node_id=1,
                         output=item.reference["answers"][0], measurement=None, error=None,
                         scorer=lambda row, out: rag.score_item(out, row.reference))
    return job.id


def test_judge_job_covers_the_finished_rag_answers(client: TestClient, rag_job: int) -> None:
    response = client.post(f"/api/v1/jobs/{rag_job}/judge", json={"model": "judge"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["total"] == 2 and job["spec"]["judge_of"] == rag_job
    results = client.get(f"/api/v1/jobs/{job['id']}/results").json()
    assert {r["model"] for r in results["records"]} == {"judge"}
    assert all(r["reference"]["exact_match"] == 1.0 for r in results["records"])


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"model": "nobody"}, 422, "unknown model 'nobody'"),
    ({"model": "judge", "extra": 1}, 422, "extra"),
])
def test_bad_judge_requests_are_refused(client: TestClient, rag_job: int,
                                        body: dict[str, object], status: int,
                                        named: str) -> None:
    response = client.post(f"/api/v1/jobs/{rag_job}/judge", json=body)
    assert response.status_code == status
    assert named in response.text
    assert len(client.get("/api/v1/jobs").json()) == 1


def test_judging_an_unknown_job_is_404(client: TestClient, rag_job: int) -> None:
    assert client.post("/api/v1/jobs/99/judge", json={"model": "judge"}).status_code == 404


@pytest.mark.parametrize(("body", "named"), [
    ({"model": "judge", "endpoint": {"url": "http://127.0.0.1:1/v1", "model": "m"}},
     "not both"),
    ({}, "not both"),
    ({"endpoint": {"url": "ftp://example/v1", "model": "m"}}, "url"),
    ({"endpoint": {"url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": "a-b"}},
     "api_key_env"),
    ({"endpoint": {"url": "http://127.0.0.1:1/v1", "model": "m", "api_key": "secret"}},
     "api_key"),
])
def test_bad_endpoint_judge_requests_are_refused(client: TestClient, rag_job: int,
                                                 body: dict[str, object], named: str) -> None:
    response = client.post(f"/api/v1/jobs/{rag_job}/judge", json=body)
    assert response.status_code == 422
    assert named in response.text
    assert len(client.get("/api/v1/jobs").json()) == 1


def test_a_missing_key_variable_fails_before_any_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from coordinator.endpoint_judge import Endpoint, ask

    monkeypatch.delenv("SLMFLEET_TEST_JUDGE_KEY", raising=False)
    endpoint = Endpoint(url="http://127.0.0.1:1/v1", model="m",
                        api_key_env="SLMFLEET_TEST_JUDGE_KEY")
    with httpx.Client() as http, pytest.raises(RuntimeError, match="SLMFLEET_TEST_JUDGE_KEY"):
        ask(endpoint, "prompt", max_tokens=2, stop=["\n"], client=http)
