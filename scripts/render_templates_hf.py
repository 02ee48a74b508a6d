#!/usr/bin/env python3
"""Render the shared chat templates with Hugging Face transformers: the expected strings.

Runs in a separate venv (``pip install transformers jinja2``; no torch needed) and uses
transformers' own renderer (``utils.chat_template_utils.render_jinja_template``, what
``apply_chat_template`` calls) with the model's special tokens as ``apply_chat_template``
passes them. ``strftime_now`` is pinned to 2026-11-26 so the output is reproducible.

    /root/.cache/orcd-build/venv-hf/bin/python scripts/render_templates_hf.py ../shared/testdata/templates

Writes tests/tokenizer/data/chat_templates_hf.json: one record per (template, conversation)
with either ``expected`` (the rendered text) or ``error`` (the TemplateError message).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "tokenizer" / "data"
FIXED_NOW = _dt.datetime(2026, 11, 26, 12, 0, 0)

# special_tokens_map of each model's Hugging Face tokenizer (what apply_chat_template passes)
SPECIALS = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "microsoft-Phi-3.5-mini-instruct.jinja": {
        "bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>",
        "pad_token": "<|endoftext|>",
    },
    "openai-gpt-oss-120b.jinja": {
        "bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>",
    },
}  # fmt: skip


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz: object = None) -> _dt.datetime:  # noqa: ARG003
        return FIXED_NOW


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import jinja2
    import transformers
    from transformers.utils import chat_template_utils as ctu

    ctu.datetime = _FixedDatetime  # strftime_now reads the module-level name at call time
    convs = json.loads((DATA / "chat_conversations.json").read_text(encoding="utf-8"))
    records = []
    for tpl_path in sorted(Path(argv[1]).glob("*.jinja")):
        template = tpl_path.read_text(encoding="utf-8")
        for name, conv in convs.items():
            rec = {"template": tpl_path.name, "conversation": name}
            messages = ctu._normalize_chat_messages(conv["messages"])
            try:
                rendered, _ = ctu.render_jinja_template(
                    conversations=[messages],
                    tools=conv.get("tools"),
                    chat_template=template,
                    add_generation_prompt=conv.get("add_generation_prompt", True),
                    **{**SPECIALS[tpl_path.name], **conv.get("kwargs", {})},
                )
                rec["expected"] = rendered[0]
            except jinja2.exceptions.TemplateError as exc:
                rec["error"] = str(exc)
            records.append(rec)
    out = DATA / "chat_templates_hf.json"
    doc = {"transformers": transformers.__version__, "jinja2": jinja2.__version__,
           "now": FIXED_NOW.isoformat(), "specials": SPECIALS, "records": records}  # fmt: skip
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"wrote {out}: {len(records)} renderings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
