"""Chat templates render exactly as Hugging Face transformers renders them.

Expected strings: tests/tokenizer/data/chat_templates_hf.json, produced by
scripts/render_templates_hf.py (transformers' own renderer, strftime_now pinned).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from orcd_toolkit.tokenizer import ChatTemplateError
from orcd_toolkit.tokenizer.chat import ChatTemplate

from .helpers import DATA

HF = json.loads((DATA / "chat_templates_hf.json").read_text(encoding="utf-8"))
CONVS = json.loads((DATA / "chat_conversations.json").read_text(encoding="utf-8"))
NOW = datetime.fromisoformat(HF["now"])


def _template(testdata: Path, name: str) -> ChatTemplate:
    specials = dict(HF["specials"][name])
    return ChatTemplate(
        (testdata / "templates" / name).read_text(encoding="utf-8"),
        bos_token=specials.pop("bos_token", ""),
        eos_token=specials.pop("eos_token", ""),
        special_tokens=specials,
        now=lambda: NOW,
    )


@pytest.mark.parametrize(
    "record", HF["records"], ids=[f"{r['template'][:10]}-{r['conversation']}" for r in HF["records"]]
)
def test_matches_hugging_face(testdata: Path, record: dict) -> None:
    tpl = _template(testdata, record["template"])
    conv = CONVS[record["conversation"]]
    kwargs = dict(
        add_generation_prompt=conv.get("add_generation_prompt", True),
        tools=conv.get("tools"),
        **conv.get("kwargs", {}),
    )
    if "error" in record:
        with pytest.raises(ChatTemplateError) as exc:
            tpl.render(conv["messages"], **kwargs)
        assert record["error"] in str(exc.value)
    else:
        assert tpl.render(conv["messages"], **kwargs) == record["expected"]


def test_all_templates_covered(testdata: Path) -> None:
    names = {p.name for p in (testdata / "templates").glob("*.jinja")}
    assert names == {r["template"] for r in HF["records"]}
    assert len(HF["records"]) == len(names) * len(CONVS)


def test_syntax_error_is_typed() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}{{ m.content }")


def test_raise_exception_is_typed() -> None:
    tpl = ChatTemplate("{{ raise_exception('no system role here') }}")
    with pytest.raises(ChatTemplateError, match="no system role here"):
        tpl.render([{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ messages.__class__.__mro__ }}", "attribute '__class__'"),
        ("{{ ''.__class__.__subclasses__() }}", "attribute '__class__'"),
        ("{{ messages.append(1) }}", "attribute 'append'"),  # immutable sandbox
        ("{% set ns = namespace(_x=1) %}", "underscore-prefixed"),
        ("{{ cycler.__init__.__globals__ }}", "attribute '__init__'"),
    ],
)
def test_sandbox_blocks_internals(source: str, message: str) -> None:
    with pytest.raises(ChatTemplateError, match=message):
        ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_output_is_bounded() -> None:
    tpl = ChatTemplate("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", max_chars=10000)
    with pytest.raises(ChatTemplateError, match="exceeds 10000 characters"):
        tpl.render([])
    with pytest.raises(ChatTemplateError, match="repeats a sequence"):
        ChatTemplate("{{ 'x' * 100000000 }}").render([])


def test_bad_messages_are_typed() -> None:
    tpl = ChatTemplate("{{ messages | length }}")
    with pytest.raises(ChatTemplateError, match="messages"):
        tpl.render("hello")  # type: ignore[arg-type]
    with pytest.raises(ChatTemplateError, match=r"messages\[1\]"):
        tpl.render([{"role": "user", "content": "a"}, "b"])  # type: ignore[list-item]


def test_tojson_matches_hf_options() -> None:
    tpl = ChatTemplate("{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(ensure_ascii=True) }}")
    out = tpl.render([], x={"a": "<é>", "b": [1, 2]})
    assert out == (
        '{"a": "<é>", "b": [1, 2]}|{\n  "a": "<é>",\n  "b": [\n    1,\n    2\n  ]\n}|'
        '{"a": "<\\u00e9>", "b": [1, 2]}'
    )


def test_tokenizer_apply_chat_template(qwen_real_tok) -> None:
    text = qwen_real_tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    ids = qwen_real_tok.encode(text, add_special=True, parse_special=True)
    assert ids[0] == qwen_real_tok.token_to_id("<|im_start|>")
    assert qwen_real_tok.decode(ids, skip_special=False) == text
