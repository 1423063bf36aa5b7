"""Unit tests for the classification task: prompt, label parsing and scoring."""

from __future__ import annotations

import pytest

from coordinator.datasets.loader import DatasetItem, load_builtin
from coordinator.evaluation.classification import (
    INVALID,
    TASK,
    ClassificationScores,
    parse_label,
    render_prompt,
    score,
)
from coordinator.evaluation.tasks import load_spec

LABELS = {
    "billing": "payments, invoices, refunds",
    "technical": "something broken, errors, crashes",
    "account": "login, password, profile, access",
    "shipping": "delivery, tracking, address",
}
NAMES = list(LABELS)


def _manual_macro_f1(refs: list[str], preds: list[str | None], labels: list[str]) -> float:
    """Textbook macro-F1: mean over labels of 2PR/(P+R), 0 when undefined."""
    total = 0.0
    for label in labels:
        tp = sum(1 for r, p in zip(refs, preds, strict=True) if r == label and p == label)
        fp = sum(1 for r, p in zip(refs, preds, strict=True) if r != label and p == label)
        fn = sum(1 for r, p in zip(refs, preds, strict=True) if r == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        total += 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return total / len(labels)


# --- constants ---------------------------------------------------------------------------


def test_constants() -> None:
    assert TASK == "classification"
    assert load_spec(TASK).stop == ("\n",)
    assert INVALID not in LABELS


# --- render_prompt -----------------------------------------------------------------------


def _examples() -> list[DatasetItem]:
    return [
        DatasetItem(id="t1", text="I was charged twice.", label="billing", split="train"),
        DatasetItem(id="t2", text="The app crashes on start.", label="technical", split="train"),
    ]


def test_render_prompt_lists_labels_examples_and_ends_with_label() -> None:
    prompt = render_prompt(labels=LABELS, examples=_examples(), text="Where is my parcel?")
    for label, description in LABELS.items():
        assert f"- {label}: {description}" in prompt
    assert "Message: I was charged twice.\nLabel: billing\n\n" in prompt
    assert "Message: The app crashes on start.\nLabel: technical\n\n" in prompt
    assert prompt.endswith("Message: Where is my parcel?\nLabel:")
    # examples come after the instruction and before the query, in the given order
    first, second = prompt.index("I was charged"), prompt.index("The app crashes")
    assert prompt.index("- shipping") < first < second < prompt.index("Where is my parcel?")


def test_render_prompt_keeps_messages_on_one_line() -> None:
    examples = [DatasetItem(id="t", text="line one\nline two", label="billing", split="train")]
    prompt = render_prompt(labels=LABELS, examples=examples, text="  multi\n\nline\tquery ")
    assert "Message: line one line two\nLabel: billing" in prompt
    assert prompt.endswith("Message: multi line query\nLabel:")


def test_render_prompt_zero_shot_and_empty_descriptions() -> None:
    prompt = render_prompt(labels={"yes": "", "no": ""}, examples=[], text="ok?")
    assert "- yes\n- no\n" in prompt
    assert prompt.endswith("Message: ok?\nLabel:")
    assert prompt.count("Message:") == 1


def test_render_prompt_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one label"):
        render_prompt(labels={}, examples=[], text="x")
    bad = [DatasetItem(id="t9", text="x", label="sales", split="train")]
    with pytest.raises(ValueError, match="t9"):
        render_prompt(labels=LABELS, examples=bad, text="x")


def test_render_prompt_with_builtin_train_split() -> None:
    ds = load_builtin("classification")
    item = ds.split("test")[0]
    prompt = render_prompt(labels=ds.labels, examples=ds.split("train"), text=item.text)
    assert prompt.count("Message:") == len(ds.split("train")) + 1
    assert prompt.endswith(f"Message: {item.text}\nLabel:")


# --- parse_label -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("billing", "billing"),
        (" billing", "billing"),
        ("billing\n", "billing"),
        ("Billing.", "billing"),
        ("TECHNICAL", "technical"),
        ("'account'", "account"),
        ('"shipping"', "shipping"),
        ("**Shipping**!", "shipping"),
        ("`billing`", "billing"),
        ("(account)", "account"),
        (" billing issue", "billing"),
        ("The label is technical", "technical"),
        ("Label: account", "account"),
        ("technical, not billing", "technical"),
        ("it is billing or maybe technical", "billing"),
        ("billing\nMessage: my parcel\nLabel: shipping", "billing"),
        ("\n\n  shipping\n", "shipping"),
    ],
)
def test_parse_label_valid(output: str, expected: str) -> None:
    assert parse_label(output, NAMES) == expected


@pytest.mark.parametrize(
    "output",
    [
        "",
        "   ",
        "\n",
        "...",
        "unknown",
        "billings",  # not a whole word
        "prebilling",
        "tech",
        "bill-ing",
        '{"label": ',
        "I don't know\nLabel: billing",  # only the first line counts
    ],
)
def test_parse_label_invalid(output: str) -> None:
    assert parse_label(output, NAMES) is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("ＢＩＬＬＩＮＧ", "billing"),  # full-width letters, NFKC
        ("«account»", "account"),
        ("“technical”", "technical"),
        ("shipping。", "shipping"),
        ("Étiquette : billing", "billing"),
        ("Facturación", None),
        ("技术支持", None),
        ("配送 shipping", "shipping"),
    ],
)
def test_parse_label_unicode(output: str, expected: str | None) -> None:
    assert parse_label(output, NAMES) == expected


def test_parse_label_non_ascii_labels_and_canonical_case() -> None:
    labels = ["Facturación", "Envío"]
    assert parse_label("envío.", labels) == "Envío"
    assert parse_label("FACTURACIÓN", labels) == "Facturación"
    assert parse_label("la respuesta es envío", labels) == "Envío"
    assert parse_label("envio", labels) is None


def test_parse_label_prefers_longer_label_at_same_position() -> None:
    labels = ["account", "account access"]
    assert parse_label("account access problem", labels) == "account access"
    assert parse_label("account, then access", labels) == "account"


def test_parse_label_exact_match_before_stripping() -> None:
    assert parse_label(" c++ ", ["c++", "c"]) == "c++"
    assert parse_label("C.", ["c++", "c"]) == "c"


def test_parse_label_rejects_bad_label_sets() -> None:
    with pytest.raises(ValueError, match="at least one"):
        parse_label("billing", [])
    with pytest.raises(ValueError, match="differ only in case"):
        parse_label("billing", ["billing", "Billing"])


# --- score -------------------------------------------------------------------------------


def test_score_perfect() -> None:
    refs = ["billing", "technical", "account", "shipping"]
    assert score(references=refs, predictions=list(refs), labels=NAMES) == ClassificationScores(
        n=4, accuracy=1.0, macro_f1=1.0, invalid_rate=0.0
    )


def test_score_all_invalid() -> None:
    refs = ["billing", "technical"]
    result = score(references=refs, predictions=[None, None], labels=NAMES)
    assert result == ClassificationScores(n=2, accuracy=0.0, macro_f1=0.0, invalid_rate=1.0)


def test_score_hand_computed_with_invalid() -> None:
    # billing:   tp=1 fp=0 fn=1 -> P=1,   R=1/2 -> F1=2/3
    # technical: tp=1 fp=1 fn=1 -> P=1/2, R=1/2 -> F1=1/2
    # account:   tp=1 fp=1 fn=0 -> P=1/2, R=1   -> F1=2/3
    # shipping:  tp=0 fp=0 fn=1                 -> F1=0
    # macro = (2/3 + 1/2 + 2/3 + 0) / 4 = 11/24
    refs = ["billing", "billing", "technical", "technical", "account", "shipping"]
    preds = ["billing", "technical", "technical", None, "account", "account"]
    result = score(references=refs, predictions=preds, labels=NAMES)
    assert result.n == 6
    assert result.accuracy == pytest.approx(3 / 6)
    assert result.invalid_rate == pytest.approx(1 / 6)
    assert result.macro_f1 == pytest.approx(11 / 24)


def test_score_matches_manual_macro_f1() -> None:
    refs = ["billing"] * 5 + ["technical"] * 4 + ["account"] * 3 + ["shipping"] * 3
    preds: list[str | None] = [
        "billing",
        "billing",
        "billing",
        "account",
        None,
        "technical",
        "technical",
        "billing",
        None,
        "account",
        "account",
        "shipping",
        "shipping",
        "technical",
        None,
    ]
    result = score(references=refs, predictions=preds, labels=NAMES)
    assert result.macro_f1 == pytest.approx(_manual_macro_f1(refs, preds, NAMES))
    assert result.accuracy == pytest.approx(8 / 15)
    assert result.invalid_rate == pytest.approx(3 / 15)
    # None is its own wrong class, never mistaken for a label
    assert result.macro_f1 < 1.0


def test_score_declared_label_without_support_counts_as_zero() -> None:
    # shipping never occurs and is never predicted: F1 = 0 (zero_division=0), so macro = 3/4
    refs = ["billing", "technical", "account"]
    result = score(references=refs, predictions=list(refs), labels=NAMES)
    assert result.accuracy == 1.0
    assert result.macro_f1 == pytest.approx(3 / 4)


def test_score_returns_plain_floats() -> None:
    result = score(references=["billing"], predictions=["billing"], labels=["billing"])
    assert type(result.macro_f1) is float
    assert type(result.accuracy) is float
    assert type(result.invalid_rate) is float


def test_score_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        score(references=[], predictions=[], labels=NAMES)
    with pytest.raises(ValueError, match="length"):
        score(references=["billing"], predictions=[], labels=NAMES)
    with pytest.raises(ValueError, match="at least one label"):
        score(references=["billing"], predictions=["billing"], labels=[])
    with pytest.raises(ValueError, match="references contain"):
        score(references=["sales"], predictions=["billing"], labels=NAMES)
    with pytest.raises(ValueError, match="parse_label"):
        score(references=["billing"], predictions=["Billing"], labels=NAMES)
    with pytest.raises(ValueError, match="reserved"):
        score(references=["billing"], predictions=[None], labels=["billing", INVALID])
