"""The item schema of each task's datasets: one frozen, strictly validated model per task.

Every item has an ``id`` and a ``split`` (``train`` items are few-shot examples, ``test``
items are scored). The rest is the task's own: a message and its label, a source sentence
and its translation, a sentence and its entities, a document and its summary, a question
with its accepted answers and the documents that support them. ``LEAK_FIELD`` names the
input field that must never appear in both splits.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Text = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]
Split = Literal["train", "test"]


class _Item(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    id: Text
    split: Split


class ClassificationItem(_Item):
    """A message and its label (one of the dataset's declared labels)."""

    text: Text
    label: Text


class TranslationItem(_Item):
    """A source sentence and its reference translation between two languages."""

    src_lang: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")]
    tgt_lang: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")]
    source: Text
    target: Text


class Entity(BaseModel):
    """A named entity: its exact text in the sentence and its type (PER, ORG, LOC, DATE, …)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    text: Text
    type: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z_]*$")]


class NerItem(_Item):
    """A sentence and its entities in order of appearance; each entity text occurs in it."""

    text: Text
    entities: tuple[Entity, ...] = Field(strict=False)  # a JSON list

    @model_validator(mode="after")
    def _entities_occur_in_text(self) -> NerItem:
        for entity in self.entities:
            if entity.text not in self.text:
                raise ValueError(f"entity {entity.text!r} does not occur verbatim in 'text'")
        return self


class SummarizationItem(_Item):
    """A document and its reference summary."""

    document: Text
    summary: Text


class RagItem(_Item):
    """A question, its accepted short answers and the ids of the documents that support it."""

    question: Text
    answers: tuple[Text, ...] = Field(min_length=1, strict=False)
    doc_ids: tuple[Text, ...] = Field(min_length=1, strict=False)


class TextItem(_Item):
    """A passage of text whose likelihood under the model is measured (perplexity)."""

    text: Text


class Document(BaseModel):
    """One document of a RAG dataset's collection."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    id: Text
    title: str = ""
    text: Text


Item = ClassificationItem | TranslationItem | NerItem | SummarizationItem | RagItem | TextItem

ITEM_MODELS: dict[str, type[_Item]] = {
    "classification": ClassificationItem,
    "translation": TranslationItem,
    "ner": NerItem,
    "summarization": SummarizationItem,
    "rag": RagItem,
    "perplexity": TextItem,
}

LEAK_FIELD: dict[str, str] = {
    "classification": "text",
    "translation": "source",
    "ner": "text",
    "summarization": "document",
    "rag": "question",
    "perplexity": "text",
}

EXAMPLE_LINE: dict[str, str] = {
    "classification": '{"id": "x1", "text": "...", "label": "billing", "split": "test"}',
    "translation": '{"id": "x1", "split": "test", "src_lang": "en", "tgt_lang": "de", '
                   '"source": "...", "target": "..."}',
    "ner": '{"id": "x1", "split": "test", "text": "Ada lives in Oslo.", "entities": '
           '[{"text": "Ada", "type": "PER"}, {"text": "Oslo", "type": "LOC"}]}',
    "summarization": '{"id": "x1", "split": "test", "document": "...", "summary": "..."}',
    "rag": '{"id": "x1", "split": "test", "question": "...", "answers": ["..."], '
           '"doc_ids": ["doc-1"]}',
    "perplexity": '{"id": "p1", "split": "test", "text": "A passage of text."}',
}
