"""Unit tests for job specs and job submission: clear errors, nothing stored, correct expansion."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from coordinator import store as st
from coordinator.datasets.loader import load_builtin
from coordinator.errors import JobSpecError
from coordinator.jobs import submit_job
from coordinator.jobspec import parse_job_spec

MODEL = "gemma-3-270m-q4_k_m"
DATASET = "builtin:classification"

YAML_SPEC = f"""
name: pi5-baseline
models: [{MODEL}]
tasks:
  - {{task: classification, dataset: {DATASET}, limit: 5}}
params: {{temperature: 0.0, seed: 7, max_tokens: 8}}
repeats: 2
"""


@pytest.fixture
def store(store_url: str) -> Iterator[st.Store]:
    """A store on each backend (see conftest.py) with the model registered."""
    store = st.Store(store_url)
    st.add_model(store, name=MODEL, sha256="1" * 64, size=1, path="/nowhere/gemma.gguf",
                 threads=2, n_ctx=2048)
    yield store
    store.close()


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "t", "models": [MODEL],
                            "tasks": [{"task": "classification", "dataset": DATASET,
                                       "limit": 2}]}
    return {**base, **changes}


def refused(store: st.Store, raw: Any, pattern: str) -> JobSpecError:
    with pytest.raises(JobSpecError, match=pattern) as info:
        submit_job(store, raw)
    assert st.list_jobs(store) == []
    return info.value


# --- parse_job_spec -------------------------------------------------------------------


def test_parses_yaml_text_with_defaults_filled_in() -> None:
    job = parse_job_spec(YAML_SPEC)
    assert job.name == "pi5-baseline"
    assert job.models == [MODEL]
    assert (job.tasks[0].task, job.tasks[0].dataset, job.tasks[0].limit) == (
        "classification", DATASET, 5)
    assert (job.params.seed, job.params.max_tokens, job.repeats) == (7, 8, 2)
    assert job.params.n_ctx == 2048 and job.limit is None


def test_parses_json_text_and_bytes_the_same_as_a_mapping() -> None:
    raw = spec(repeats=3)
    assert parse_job_spec(json.dumps(raw)) == parse_job_spec(raw)
    assert parse_job_spec(json.dumps(raw).encode()) == parse_job_spec(raw)


def test_invalid_yaml_is_refused() -> None:
    with pytest.raises(JobSpecError, match="not valid YAML/JSON"):
        parse_job_spec("name: x\nmodels: [unclosed\n")


@pytest.mark.parametrize(("raw", "kind"), [("- a\n- b\n", "list"), ("just text", "str"),
                                            ("", "NoneType"), (42, "int")])
def test_non_mapping_is_refused(raw: Any, kind: str) -> None:
    with pytest.raises(JobSpecError, match=f"must be a mapping.*got {kind}"):
        parse_job_spec(raw)


def test_missing_models_is_named() -> None:
    raw = spec()
    del raw["models"]
    with pytest.raises(JobSpecError, match=r"models: Field required"):
        parse_job_spec(raw)


def test_empty_models_is_named() -> None:
    with pytest.raises(JobSpecError, match=r"models: List should have at least 1 item"):
        parse_job_spec(spec(models=[]))


def test_unknown_key_is_named() -> None:
    with pytest.raises(JobSpecError, match=r"colour: Extra inputs are not permitted"):
        parse_job_spec(spec(colour="blue"))


def test_unknown_key_inside_a_task_is_named() -> None:
    with pytest.raises(JobSpecError, match=r"tasks\.0\.split: Extra inputs"):
        parse_job_spec(spec(tasks=[{"task": "classification", "dataset": DATASET,
                                    "split": "test"}]))


def test_negative_limit_is_named_at_job_and_task_level() -> None:
    with pytest.raises(JobSpecError, match=r"(?<!\.)limit: Input should be greater than"):
        parse_job_spec(spec(limit=-1))
    with pytest.raises(JobSpecError, match=r"tasks\.0\.limit: Input should be greater than"):
        parse_job_spec(spec(tasks=[{"task": "classification", "dataset": DATASET,
                                    "limit": -1}]))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(JobSpecError) as info:
        parse_job_spec({"name": "t", "repeats": 0, "params": {"temperature": 5}})
    message = str(info.value)
    for field in ("models", "tasks", "repeats", "params.temperature"):
        assert f"{field}:" in message


# --- submit_job: refused specs store nothing ------------------------------------------


def test_bad_spec_stores_nothing(store: st.Store) -> None:
    refused(store, spec(repeats=0), r"repeats:")
    refused(store, "models: [unclosed", "YAML")


def test_unknown_model_suggests_the_near_name_and_lists_registered(store: st.Store) -> None:
    st.add_model(store, name="qwen2.5-0.5b", sha256="2" * 64, size=1, path="/q.gguf",
                 threads=2, n_ctx=2048)
    error = refused(store, spec(models=["gemma-3-270m-q4_k_s"]),
                    r"models: unknown model 'gemma-3-270m-q4_k_s'")
    message = str(error)
    assert f"did you mean {MODEL}?" in message
    assert f"registered: {MODEL}, qwen2.5-0.5b" in message
    assert "POST /api/v1/models" in message


def test_unknown_model_with_nothing_close_gives_no_suggestion(store: st.Store) -> None:
    error = refused(store, spec(models=["totally-different"]), "unknown model")
    assert "did you mean" not in str(error)


def test_unknown_task_suggests_the_nearest(store: st.Store) -> None:
    error = refused(store, spec(tasks=[{"task": "clasification", "dataset": DATASET}]),
                    r"unknown task 'clasification'; did you mean classification\?")
    assert "available: classification" in str(error)


def test_unknown_dataset_lists_the_builtins(store: st.Store) -> None:
    refused(store, spec(tasks=[{"task": "classification", "dataset": "builtin:sentiment"}]),
            r"dataset 'builtin:sentiment'.*built-in: builtin:classification")


def test_dataset_of_another_task_is_refused(store: st.Store) -> None:
    refused(store, spec(tasks=[{"task": "ner", "dataset": DATASET}]),
            r"tasks: dataset 'builtin:classification' is a classification dataset, not ner")


def test_a_later_bad_task_still_stores_nothing(store: st.Store) -> None:
    good = {"task": "classification", "dataset": DATASET, "limit": 1}
    refused(store, spec(tasks=[good, {"task": "classification", "dataset": "builtin:nope"}]),
            "builtin:nope")


def test_a_model_listed_twice_is_refused(store: st.Store) -> None:
    refused(store, spec(models=[MODEL, MODEL]), rf"models: {MODEL} listed more than once")


def test_the_same_task_and_dataset_listed_twice_is_refused(store: st.Store) -> None:
    twice = [{"task": "classification", "dataset": DATASET, "limit": 2},
             {"task": "classification", "dataset": "classification", "limit": 3}]
    refused(store, spec(tasks=twice), r"tasks: classification on dataset .* more than once")


# --- submit_job: a good spec ----------------------------------------------------------


def test_good_spec_expands_models_times_items_times_repeats(store: st.Store) -> None:
    st.add_model(store, name="qwen", sha256="2" * 64, size=1, path="/q.gguf", threads=2,
                 n_ctx=2048)
    job = submit_job(store, spec(models=[MODEL, "qwen"], repeats=3, limit=4,
                                 tasks=[{"task": "classification", "dataset": DATASET}],
                                 params={"seed": 100, "max_tokens": 8}))
    items = st.job_items(store, job_id=job.id)
    assert job.total == len(items) == 2 * 4 * 3
    assert [j.id for j in st.list_jobs(store)] == [job.id]

    # every (model, repeat) gets the same 4 dataset items
    keys = {(i.model, i.repeat): set() for i in items}
    for i in items:
        keys[(i.model, i.repeat)].add(i.item_key)
    assert set(keys) == {(m, r) for m in (MODEL, "qwen") for r in range(3)}
    assert len({frozenset(v) for v in keys.values()}) == 1
    assert all(len(v) == 4 for v in keys.values())

    # the seed of each work item is the job's seed plus its repeat index
    assert Counter(i.params["seed"] for i in items) == {100: 8, 101: 8, 102: 8}
    assert all(i.params["seed"] == 100 + i.repeat for i in items)
    assert all(i.params["max_tokens"] == 8 and i.params["stop"] == ["\n"] for i in items)
    assert all(i.status == "pending" and i.attempts == 0 for i in items)


def test_work_items_carry_the_rendered_prompt_and_reference(store: st.Store) -> None:
    dataset = load_builtin(DATASET)
    by_id = {item.id: item for item in dataset.items}
    job = submit_job(store, spec())
    items = st.job_items(store, job_id=job.id)
    assert len(items) == 2
    for item in items:
        source = by_id[item.item_key]
        assert source.split == "test"
        assert item.dataset == dataset.ref
        assert item.prompt.endswith(f"Message: {' '.join(source.text.split())}\nLabel:")
        assert all(f"- {label}:" in item.prompt for label in dataset.labels)
        assert item.reference == {"label": source.label, "labels": sorted(dataset.labels)}


def test_task_limit_overrides_job_limit_and_no_limit_takes_every_test_item(
        store: st.Store) -> None:
    test_items = len(load_builtin(DATASET).split("test"))
    limited = submit_job(store, spec(limit=10))  # the task's own limit (2) wins
    everything = submit_job(store, spec(tasks=[{"task": "classification",
                                                "dataset": DATASET}]))
    assert limited.total == 2
    assert everything.total == test_items
