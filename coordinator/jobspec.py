"""The job spec: which models run which tasks on which datasets, with what parameters.

Parsed from YAML or JSON into a frozen pydantic model; every error names the field
and how to fix it, and nothing is stored until the whole spec is valid.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coordinator.errors import JobSpecError


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskSpec(_Spec):
    task: str = Field(min_length=1)
    dataset: str = Field(min_length=1,
                         description="builtin:NAME, or the name of a registered dataset")
    limit: int | None = Field(default=None, ge=1)


class Params(_Spec):
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = 42
    max_tokens: int | None = Field(default=None, ge=1, le=4096,
                                   description="output budget; default: each task's own")
    prompting: Literal["few_shot", "chat"] = Field(
        default="few_shot", description="few_shot: plain text with examples, for base "
        "models; chat: zero-shot through each model's GGUF chat template")
    n_ctx: int = Field(default=2048, ge=128, le=131072,
                       description="context the job needs; each model must be served with "
                       "at least this much (its registered n_ctx)")


class JobSpec(_Spec):
    name: str = Field(min_length=1, max_length=128)
    models: list[str] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    params: Params = Params()
    repeats: int = Field(default=1, ge=1, le=100)
    limit: int | None = Field(default=None, ge=1, description="items per task")
    priority: int = Field(default=0, ge=-100, le=100,
                          description="higher runs first; jobs of equal priority share "
                          "the fleet evenly")


def parse_job_spec(data: Any) -> JobSpec:
    """Validate a mapping (or YAML/JSON text) as a job spec; JobSpecError on any problem."""
    if isinstance(data, str | bytes):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise JobSpecError(f"job spec is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JobSpecError("job spec must be a mapping with keys name, models, tasks "
                           f"(got {type(data).__name__})")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            for err in exc.errors())
        raise JobSpecError(f"invalid job spec: {problems}") from None
