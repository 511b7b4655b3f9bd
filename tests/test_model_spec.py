"""Reading model rules from config files, and the sequence template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedgate.engine.model_spec import qwen3_query, read_model_spec
from embedgate.engine.sequences import SequenceTemplate, find_template
from embedgate.errors import ServiceError


def write(path: Path, name: str, data: object) -> None:
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(data))


def test_qwen3_is_recognised_from_its_config(tmp_path: Path) -> None:
    write(
        tmp_path,
        "config.json",
        {"model_type": "qwen3", "hidden_size": 1024, "max_position_embeddings": 32768},
    )
    write(
        tmp_path,
        "config_sentence_transformers.json",
        {"prompts": {"query": "Instruct: Retrieve parallel sentences\nQuery:", "document": ""}},
    )
    spec = read_model_spec(tmp_path)
    assert (spec.pooling, spec.padding_side, spec.normalize) == ("last", "left", True)
    assert (spec.min_dimensions, spec.native_dimensions, spec.max_tokens) == (32, 1024, 32768)
    assert spec.default_task == "Retrieve parallel sentences"
    assert (
        spec.apply_prompt("hi", "query", None) == "Instruct: Retrieve parallel sentences\nQuery:hi"
    )
    assert spec.apply_prompt("hi", "document", None) == "hi"
    assert spec.apply_prompt("hi", None, None) == "hi"


def test_query_format_is_exact() -> None:
    assert qwen3_query("T", "q") == "Instruct: T\nQuery:q"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_lasttoken", "last"),
    ],
)
def test_sentence_transformers_pooling(tmp_path: Path, mode: str, expected: str) -> None:
    write(
        tmp_path,
        "config.json",
        {"model_type": "xlm-roberta", "hidden_size": 768, "max_position_embeddings": 514},
    )
    write(
        tmp_path,
        "modules.json",
        [
            {"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    write(tmp_path, "1_Pooling/config.json", {mode: True})
    write(tmp_path, "config_sentence_transformers.json", {"prompts": {"query": "query: "}})
    spec = read_model_spec(tmp_path)
    assert spec.pooling == expected and not spec.normalize and spec.max_tokens == 512
    assert spec.apply_prompt("x", "query", None) == "query: x"


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "config.json", {"model_type": "bert", "hidden_size": 8})
    with pytest.raises(ValueError, match="Pooling"):
        read_model_spec(tmp_path)


def test_template_roundtrip() -> None:
    assert find_template([101, 7, 8, 102], [7, 8]) == ((101,), (102,))
    t = SequenceTemplate.for_model((101,), (102,), 1000, 6)
    assert t.wrap([1, 2, 3], 0, False) == [101, 1, 2, 3, 102]
    assert t.wrap_token_ids([101, 1, 2, 102], 0, False) == [101, 1, 2, 102]
    assert t.wrap([1, 2, 3, 4, 5, 6], 0, True) == [101, 1, 2, 3, 4, 102]
    with pytest.raises(ServiceError, match="over the limit of 6 by 2"):
        t.wrap([1, 2, 3, 4, 5, 6], 0, False)


def test_eos_is_appended_when_tokenizer_does_not() -> None:
    assert SequenceTemplate.for_model((), (), 100, 8, required_eos=9).suffix == (9,)
    assert SequenceTemplate.for_model((), (9,), 100, 8, required_eos=9).suffix == (9,)
