"""Perplexity from token log-probs: planning, scoring the worker's answer, aggregation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coordinator.datasets.loader import load_builtin, load_dataset_file
from coordinator.errors import DatasetError
from coordinator.evaluation.tasks import Scored, get_task

TASK = get_task("perplexity")


def test_passages_are_scored_as_they_are() -> None:
    dataset = load_builtin("perplexity")
    planned = TASK.plan(dataset, limit=4, seed=0)
    texts = {item.id: item.text for item in dataset.items}
    assert len(planned) == 4
    for item in planned:
        assert item.prompt == texts[item.item_key] == item.zero_shot
        assert item.stop == ()
        assert item.reference == {"bytes": len(item.prompt.encode())}
    assert TASK.spec.kind == "score"


def _scored(logprob_sum: float, tokens: int, size: int) -> Scored:
    reference = {"bytes": size}
    output = json.dumps({"logprob_sum": logprob_sum, "tokens": tokens})
    prediction, score = TASK.score_item(output, reference)
    assert prediction is None
    return Scored(prediction=None, reference=reference, score=score)


def test_aggregate_weights_every_token_equally() -> None:
    items = [_scored(-10.0, 5, 20), _scored(-2.0, 3, 12)]
    result = TASK.aggregate(items)
    assert result["nll_per_token"] == pytest.approx(12.0 / 8)
    assert result["perplexity"] == pytest.approx(math.exp(1.5))
    assert result["bits_per_byte"] == pytest.approx(12.0 / math.log(2) / 32)


def test_a_certain_model_has_perplexity_one() -> None:
    assert TASK.aggregate([_scored(0.0, 4, 10)])["perplexity"] == 1.0


@pytest.mark.parametrize("output", ['{"logprob_sum": 1.5, "tokens": 3}',
                                    '{"logprob_sum": -1.0, "tokens": 0}', "not json"])
def test_an_impossible_worker_answer_is_refused(output: str) -> None:
    with pytest.raises(ValueError):
        TASK.score_item(output, {"bytes": 5})


def test_a_text_file_becomes_one_item_per_paragraph(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("First paragraph,\nstill the first.\n\n\n  Second one.  \n")
    dataset = load_dataset_file(notes, task="perplexity")
    assert [(i.id, i.text, i.split) for i in dataset.items] == [
        ("p0001", "First paragraph, still the first.", "test"), ("p0002", "Second one.", "test")]


def test_a_text_file_is_only_a_perplexity_dataset(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Some text.\n")
    with pytest.raises(DatasetError, match="plain-text file is a perplexity dataset"):
        load_dataset_file(notes, task="summarization")
