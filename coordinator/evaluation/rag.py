"""RAG task: retrieve the top-k documents for each question, answer from them, score both.

Retrieval runs on the coordinator when the job is planned (BM25 by default; MiniLM
embeddings or a hybrid of both with the `embeddings` extra), so each work item carries its
rendered context and whether a gold document was retrieved. Answers are scored with SQuAD
exact match and token F1, faithfulness to the retrieved context, and whether they merely
echo the question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator.datasets.loader import Dataset
from coordinator.evaluation import metrics
from coordinator.evaluation.embeddings import default_embedder
from coordinator.evaluation.retrieval import Document, hit_at_k, make_index
from coordinator.evaluation.tasks import (
    PlannedItem,
    Scored,
    TaskSpec,
    first_line,
    one_line,
    render_prompts,
    sample_test_items,
)

ITEM_METRICS = {"hit_rate": "hit", "exact_match": "exact_match", "token_f1": "token_f1",
                "faithfulness": "faithfulness", "echo_rate": "echo"}


def render_context(documents: Sequence[Document]) -> str:
    return "".join(f"[{d.title}] {one_line(d.text)}\n" for d in documents)


class RagTask:
    name = "rag"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        retrieval = spec.retrieval or {}
        self.retriever: str = retrieval.get("retriever", "bm25")
        self.k: int = int(retrieval.get("k", 2))

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        documents = {d.id: Document(id=d.id, title=d.title, text=d.text)
                     for d in dataset.documents}
        embedder = default_embedder() if self.retriever != "bm25" else None
        index = make_index(self.retriever, list(documents.values()), embedder)  # type: ignore[arg-type]
        examples = [{"context": render_context([documents[d] for d in e.doc_ids]),
                     "question": one_line(e.question), "answer": e.answers[0]}
                    for e in dataset.split("train")[:1]]  # one: contexts are long
        planned = []
        for item in sample_test_items(dataset, limit=limit, seed=seed):
            retrieved = [doc_id for doc_id, _ in index.search(item.question, self.k)]
            context = render_context([documents[d] for d in retrieved])
            few_shot, zero_shot = render_prompts(
                self.spec.prompt, examples=examples,
                query={"context": context, "question": one_line(item.question)})
            planned.append(PlannedItem(
                item_key=item.id, prompt=few_shot, zero_shot=zero_shot, stop=self.spec.stop,
                reference={"question": item.question, "answers": list(item.answers),
                           "doc_ids": list(item.doc_ids), "retrieved": retrieved,
                           "context": context, "retriever": self.retriever, "k": self.k,
                           "hit": hit_at_k(retrieved, item.doc_ids, self.k)}))
        return planned

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        answer = first_line(output)
        answers = reference["answers"]
        return answer, {
            "hit": bool(reference["hit"]),
            "exact_match": metrics.exact_match(answer, answers),
            "token_f1": metrics.token_f1(answer, answers),
            "faithfulness": metrics.faithfulness(answer, reference["context"]),
            "echo": metrics.echoes_question(answer, reference["question"]),
        }

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]:
        if not items:
            return {}
        return {name: sum(float(i.score[key]) for i in items) / len(items)
                for name, key in ITEM_METRICS.items()}
