"""Chat templates (``tokenizer.chat_template``) rendered like Hugging Face, in a Jinja sandbox.

Hugging Face's ``apply_chat_template`` (transformers ``utils/chat_template_utils.py``) is the
reference every template is written against, so we reproduce its environment: an
``ImmutableSandboxedEnvironment`` with ``trim_blocks``/``lstrip_blocks``, the ``loopcontrols``
extension and a ``{% generation %}`` block; ``raise_exception``, ``strftime_now``, ``dict`` and
a ``namespace`` that refuses underscore names; a ``tojson`` filter with HF's options (no HTML
escaping, ``ensure_ascii=False``, ``indent``/``separators``/``sort_keys``); messages normalised
the same way (``None`` keys dropped, plain JSON data only, ``reasoning_content`` mirrored to
``thinking``); and ``bos_token``/``eos_token`` plus caller keywords as variables.

Beyond HF: the output is bounded (``max_chars``), ``*``/``**`` on strings, lists and numbers
are bounded too (a template cannot build a gigabyte string), and every failure — syntax,
``raise_exception``, sandbox violation, runtime error — is a :class:`ChatTemplateError` with
the template's own message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from orcd_toolkit.tokenizer.errors import ChatTemplateError

DEFAULT_MAX_CHARS = 1 << 22  # 4 Mi characters of rendered prompt
_MAX_REPEAT = 1 << 20  # longest str/list a template may build with * (elements)
_MAX_POW = 1 << 12

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` renders its body (HF tracks assistant spans)."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace()`` without dunder/underscore attributes (as HF's TemplateNamespace)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja's Namespace signature
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed attributes ({name!r})"
            )


class _TemplateDict:
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with size limits on ``*`` and ``**``."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    if len(seq) * max(n, 0) > _MAX_REPEAT:
                        raise jinja2.exceptions.SecurityError(
                            f"template repeats a sequence to more than {_MAX_REPEAT} elements"
                        )
        elif operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_POW:
            raise jinja2.exceptions.SecurityError(f"template exponent {right} exceeds {_MAX_POW}")
        return super().call_binop(context, operator, left, right)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _plain(value: Any) -> Any:
    """JSON-plain copy of template inputs (HF ``_plain_template_data``): no foreign objects
    with methods reach the sandbox."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _plain(item())
    return f"<{type(value).__name__}>"


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """HF's message normalisation: mappings only, ``None`` values dropped, plain data,
    reasoning mirrored under ``thinking``/``reasoning_content``."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ChatTemplateError("messages must be a list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatTemplateError(f"messages[{i}] must be an object, got {type(m).__name__}")
        msg = _plain({k: v for k, v in m.items() if v is not None})
        reasoning = next(
            (msg[k] for k in _REASONING_FIELDS if msg.get(k) is not None), None
        )
        if reasoning is not None:
            msg = {"thinking": reasoning, **msg, "reasoning_content": reasoning}
        out.append(msg)
    return out


class ChatTemplate:
    """One compiled chat template. ``now`` is the clock behind ``strftime_now`` (tests pin it)."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        special_tokens: Mapping[str, str] | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        if not isinstance(source, str) or not source:
            raise ChatTemplateError("chat template is empty")
        self.source = source
        self.max_chars = max_chars
        self._now = now
        self._specials = {"bos_token": bos_token, "eos_token": eos_token, **(special_tokens or {})}
        env = _BoundedSandbox(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
            undefined=jinja2.Undefined,
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = self._strftime_now
        env.globals["dict"] = _TemplateDict()
        env.globals["namespace"] = _TemplateNamespace
        try:
            self._template = env.from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"chat template does not compile (line {exc.lineno}): {exc.message}"
            ) from None

    def _strftime_now(self, fmt: str) -> str:
        return self._now().strftime(fmt)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt text. Raises :class:`ChatTemplateError` on any template failure."""
        msgs = normalize_messages(messages)
        if tools is not None and (
            isinstance(tools, str | bytes) or not all(isinstance(t, Mapping) for t in tools)
        ):
            raise ChatTemplateError("tools must be a list of JSON-schema objects")
        variables = {
            **self._specials,
            **_plain(kwargs),
            "messages": msgs,
            "tools": _plain(list(tools)) if tools is not None else None,
            "documents": _plain(list(documents)) if documents is not None else None,
            "add_generation_prompt": bool(add_generation_prompt),
        }
        parts: list[str] = []
        total = 0
        try:
            for chunk in self._template.generate(**variables):
                total += len(chunk)
                if total > self.max_chars:
                    raise ChatTemplateError(
                        f"rendered chat template exceeds {self.max_chars} characters"
                    )
                parts.append(chunk)
        except ChatTemplateError:
            raise
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"chat template failed: {exc.message or exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError,
                OverflowError, RecursionError) as exc:  # fmt: skip
            raise ChatTemplateError(
                f"chat template failed: {type(exc).__name__}: {exc}"
            ) from None
        return "".join(parts)
