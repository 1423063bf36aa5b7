"""Chat templates read from GGUF metadata and rendered on the coordinator, sandboxed."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.chat_template import read_chat_template, render_chat
from coordinator.errors import ModelError
from tests.support.tiny_gguf import EOS_ID, build_vocab, write_tiny_gguf

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_template_and_eos_token_are_read_from_the_gguf(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "chat.gguf", chat_template=CHATML)
    chat = read_chat_template(path)
    assert chat == {"template": CHATML, "eos_token": build_vocab()[0][EOS_ID]}


def test_a_base_model_has_no_template(tmp_path: Path) -> None:
    assert read_chat_template(write_tiny_gguf(tmp_path / "base.gguf")) is None


def test_not_a_gguf_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 16)
    with pytest.raises(ModelError, match="cannot read the GGUF metadata"):
        read_chat_template(bad)


def test_render_ends_where_the_answer_begins() -> None:
    prompt = render_chat({"template": CHATML, "eos_token": "</s>"},
                         [{"role": "user", "content": "Translate: hello"}])
    assert prompt == ("<|im_start|>user\nTranslate: hello<|im_end|>\n"
                      "<|im_start|>assistant\n")


def test_bos_is_left_to_the_tokenizer_and_eos_is_known() -> None:
    template = "{{ bos_token }}[{{ messages[0]['content'] }}]{{ eos_token }}"
    assert render_chat({"template": template, "eos_token": "</s>"},
                       [{"role": "user", "content": "x"}]) == "[x]</s>"


def test_raise_exception_in_a_template_is_a_model_error() -> None:
    template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(ModelError, match="roles must alternate"):
        render_chat({"template": template}, [{"role": "user", "content": "x"}])


def test_templates_cannot_escape_the_sandbox() -> None:
    template = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ModelError, match="chat template failed to render"):
        render_chat({"template": template}, [{"role": "user", "content": "x"}])
