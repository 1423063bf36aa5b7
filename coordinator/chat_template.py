"""Zero-shot prompts for instruction-tuned models, rendered with the model's own chat template.

A GGUF file carries its chat template (Jinja) in `tokenizer.chat_template`. The coordinator
reads it once when the model is registered and renders each prompt itself, in a sandboxed
Jinja environment configured as Hugging Face's, so workers stay plain completions. The
beginning-of-sequence token is rendered empty: the worker's tokenizer adds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from coordinator.errors import ModelError

_KEYS = ("tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.tokens")


def read_chat_template(path: Path) -> dict[str, str] | None:
    """`{"template", "eos_token"}` from a GGUF file's metadata, or None if it has none."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(path)).fields
    except (ValueError, OSError) as exc:
        raise ModelError(f"path: cannot read the GGUF metadata of {path}: {exc}") from exc
    template = fields.get("tokenizer.chat_template")
    if template is None:
        return None
    eos = ""
    eos_id, tokens = fields.get("tokenizer.ggml.eos_token_id"), fields.get("tokenizer.ggml.tokens")
    if eos_id is not None and tokens is not None:
        index = int(eos_id.parts[eos_id.data[0]][0])
        eos = bytes(tokens.parts[tokens.data[index]]).decode("utf-8", "replace")
    return {"template": bytes(template.parts[template.data[0]]).decode("utf-8"),
            "eos_token": eos}


def _raise(message: str) -> None:
    raise TemplateError(message)


def render_chat(chat: dict[str, str], messages: Sequence[dict[str, Any]]) -> str:
    """The prompt text for `messages`, ending where the assistant's answer begins."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    try:
        return env.from_string(chat["template"]).render(
            messages=list(messages), add_generation_prompt=True, bos_token="",
            eos_token=chat.get("eos_token", ""))
    except TemplateError as exc:
        raise ModelError(f"the model's chat template failed to render: {exc}") from exc
