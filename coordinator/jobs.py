"""Submitting a job: validate the spec against what exists, then expand it into work items.

A job is models × tasks × dataset items × repeats. Everything is checked first —
unknown models, datasets and tasks are refused with the nearest names — so a bad spec
stores nothing. Each work item carries its rendered prompt and its reference answer.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from coordinator import store as st
from coordinator.chat_template import render_chat
from coordinator.datasets.loader import (
    BUILTIN_PREFIX,
    Dataset,
    builtin_names,
    load_builtin,
    parse_dataset,
)
from coordinator.db import DatasetRow, JobRow, ModelRow
from coordinator.endpoint_judge import Endpoint
from coordinator.errors import DatasetError, JobSpecError
from coordinator.evaluation.tasks import PlannedItem, get_task
from coordinator.jobspec import JobSpec, parse_job_spec


def stored_dataset(row: DatasetRow) -> Dataset:
    """A registered user dataset, parsed from the bytes the store holds."""
    return parse_dataset(row.content, task=row.task, where=Path(f"dataset '{row.name}'"),
                         name=row.name, labels=row.labels, documents_raw=row.documents,
                         version=row.sha256[:12], csv_format=row.format == "csv",
                         text_format=row.format == "text")


def resolve_dataset(store: st.Store, ref: str) -> Dataset:
    """The dataset a job spec names: `builtin:NAME` or the name of a registered dataset."""
    if not ref.startswith(BUILTIN_PREFIX):
        row = st.get_dataset(store, name=ref)
        if row is not None:
            return stored_dataset(row)
    try:
        return load_builtin(ref)
    except DatasetError as exc:
        registered = [d.name for d in st.list_datasets(store)]
        raise JobSpecError(f"dataset '{ref}': {exc} (built-in: "
                           f"{', '.join('builtin:' + n for n in builtin_names())}; "
                           f"registered: {', '.join(registered) or 'none'})") from None


def _prompt(planned: PlannedItem, model: ModelRow, spec: JobSpec) -> str:
    """The item's prompt for `model`: few-shot text, or zero-shot in its chat template."""
    if spec.params.prompting == "chat" and model.chat_template is not None:
        return render_chat(model.chat_template,
                           [{"role": "user", "content": planned.zero_shot.strip()}])
    return planned.prompt


def submit_job(store: st.Store, raw: Any) -> JobRow:
    """Validate `raw` (mapping or YAML/JSON text) and store the job with all its items."""
    spec = raw if isinstance(raw, JobSpec) else parse_job_spec(raw)
    known = {m.name: m for m in st.list_models(store)}
    for model in spec.models:
        if model not in known:
            near = difflib.get_close_matches(model, list(known), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "."
            raise JobSpecError(f"models: unknown model '{model}'{hint} Register it first with "
                               "POST /api/v1/models (registered: "
                               f"{', '.join(sorted(known)) or 'none'})")
        if spec.params.prompting == "chat" and known[model].chat_template is None:
            raise JobSpecError(f"params.prompting: model '{model}' has no chat template in "
                               "its GGUF file (a base model?); use prompting: few_shot")
        if known[model].n_ctx < spec.params.n_ctx:
            raise JobSpecError(f"params.n_ctx: the job needs a context of {spec.params.n_ctx} "
                               f"tokens but model '{model}' is served with "
                               f"{known[model].n_ctx}; lower params.n_ctx or register the "
                               "model with a larger n_ctx")
    twice = sorted({m for m in spec.models if spec.models.count(m) > 1})
    if twice:
        raise JobSpecError(f"models: {', '.join(twice)} listed more than once; list each "
                           "model once")
    items: list[st.NewWorkItem] = []
    seen: set[tuple[str, str]] = set()
    for task_spec in spec.tasks:
        task = get_task(task_spec.task)
        dataset = resolve_dataset(store, task_spec.dataset)
        if (task.name, dataset.ref) in seen:
            raise JobSpecError(f"tasks: {task.name} on dataset '{task_spec.dataset}' is listed "
                               "more than once; list each task and dataset pair once")
        seen.add((task.name, dataset.ref))
        if dataset.task != task.name:
            raise JobSpecError(f"tasks: dataset '{task_spec.dataset}' is a {dataset.task} "
                               f"dataset, not {task.name}")
        limit = task_spec.limit or spec.limit
        planned = task.plan(dataset, limit=limit, seed=spec.params.seed)
        for model in spec.models:
            for repeat in range(spec.repeats):
                params = {**spec.params.model_dump(), "kind": task.spec.kind,
                          "max_tokens": spec.params.max_tokens or task.spec.max_tokens}
                for p in planned:
                    items.append(st.NewWorkItem(
                        model=model, task=task.name, dataset=dataset.ref, item_key=p.item_key,
                        repeat=repeat, prompt=_prompt(p, known[model], spec)
                        if task.spec.kind == "complete" else p.prompt,  # a passage as is
                        reference=p.reference,
                        params={**params, "stop": list(p.stop),
                                "seed": spec.params.seed + repeat}))
    if not items:
        raise JobSpecError("the job has no work items: its datasets have no test items")
    return st.create_job(store, name=spec.name, spec=spec.model_dump(), items=items)


def submit_judge_job(store: st.Store, *, job_id: int, model: str | None = None,
                     endpoint: Endpoint | None = None) -> JobRow:
    """A job judging every finished RAG answer of job `job_id` (yes/no).

    The judge is a registered `model` served by the fleet, or an OpenAI-compatible
    `endpoint` that the coordinator calls itself (see `coordinator.endpoint_judge`).
    """
    from coordinator.evaluation.judge import JudgeTask

    st.get_job(store, job_id=job_id)
    if endpoint is not None and model is None:
        judge = endpoint.work_model
    elif model is not None and endpoint is None:
        if model not in {m.name for m in st.list_models(store)}:
            raise JobSpecError(f"model: unknown model '{model}'; register the judge model "
                               "first with POST /api/v1/models")
        judge = model
    else:
        raise JobSpecError("give either model (a registered model) or endpoint, not both")
    answers = [{"key": f"{i.model}/{i.item_key}/r{i.repeat}",
                "question": i.reference["question"], "answers": i.reference["answers"],
                "candidate": i.prediction or "", "exact_match": (i.score or {})["exact_match"]}
               for i in st.job_items(store, job_id=job_id)
               if i.task == "rag" and i.status == "done"]
    if not answers:
        raise JobSpecError(f"job {job_id} has no finished rag items to judge")
    task = cast(JudgeTask, get_task("rag_judge"))
    params = {"temperature": 0.0, "seed": 42, "max_tokens": task.spec.max_tokens,
              "n_ctx": 2048, "prompting": "few_shot"}
    items = [st.NewWorkItem(model=judge, task=task.name, dataset=f"job:{job_id}",
                            item_key=p.item_key, repeat=0, prompt=p.prompt,
                            reference=p.reference, params={**params, "stop": list(p.stop)})
             for p in task.plan_answers(answers)]
    spec = {"name": f"judge of job {job_id} by {judge}", "judge_of": job_id,
            "models": [judge], "tasks": [{"task": task.name, "dataset": f"job:{job_id}"}],
            "params": params, "endpoint": asdict(endpoint) if endpoint else None}
    return st.create_job(store, name=str(spec["name"]), spec=spec, items=items)
