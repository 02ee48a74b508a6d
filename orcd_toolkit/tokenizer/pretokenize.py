"""Pre-tokenizer regexes chosen by ``tokenizer.ggml.pre``, exactly as llama.cpp splits text.

llama.cpp (src/llama-vocab.cpp, ``llm_tokenizer_bpe``) keeps a list of regexes per pre-tokenizer
type and applies them one after the other (src/unicode.cpp, ``unicode_regex_split``): each
regex splits every piece left by the previous one into its matches *and* the gaps between them.
It classifies code points with its own tables (``unicode-data.cpp``), not with the regex
engine's, and a few patterns run through hand-written splitters (GPT-2, Llama-3, Qwen2) that
behave like the regex over those tables.

We express every pattern for the ``tokenizers`` package (Oniguruma): ``\\p{L}``, ``\\p{N}``,
``\\p{P}``, ``\\p{S}``, ``\\p{M}`` and ``\\s`` are rewritten into explicit character classes
generated from llama.cpp's tables (:mod:`._unicode_llama`). That closes the gap where
Oniguruma's Unicode version disagrees with llama.cpp's (docs/tokenizer.md lists the cases).
"""

from __future__ import annotations

from functools import cache

from orcd_toolkit.tokenizer import _unicode_llama as U
from orcd_toolkit.tokenizer.errors import UnknownPreTokenizer

_CONTRACTIONS_CI = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
LLAMA3 = (
    _CONTRACTIONS_CI
    + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)|\\s+"
)
QWEN2 = (
    _CONTRACTIONS_CI
    + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)|\\s+"
)
# llama.cpp's adaptation of the o200k pattern (no \p{Lu}/\p{Ll} in its tables): a letter is
# "upper-ish" unless it is a-z and "lower-ish" unless it is A-Z, so non-ASCII letters count as
# both. tiktoken's own o200k pattern differs for non-ASCII case and for \p{M}; the hf-json
# tokenizer (GPT-OSS's tokenizer.json) keeps tiktoken's.
GPT4O = (
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
    + _CONTRACTIONS_CI
    + "?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
    + _CONTRACTIONS_CI
    + "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
DEFAULT = (
    "[\\p{P}\\$\\+<=>\\^~\\|]+",
    GPT2,
    "\\p{N}+",
    "[0-9][0-9][0-9]",
)

# pre-tokenizer type -> regex list (llama-vocab.cpp, llm_tokenizer_bpe constructor)
_REGEXES: dict[str, tuple[str, ...]] = {
    "default": DEFAULT,
    "llama3": (LLAMA3,),
    "gpt2": (GPT2,),
    "qwen2": (QWEN2,),
    "starcoder": ("\\p{N}", GPT2),
    "gpt4o": (GPT4O,),
}

# tokenizer.ggml.pre value -> (llama.cpp pre type, ignore_merges, clean_spaces, add_bos default)
# from llama_vocab::impl::load. Only the types whose regexes we carry are listed; anything else
# is a clear UnknownPreTokenizer error rather than a silently different split.
PRE_TYPES: dict[str, tuple[str, bool, bool, bool | None]] = {
    "default": ("default", False, True, None),
    "llama3": ("llama3", True, True, True),
    "llama-v3": ("llama3", True, True, True),
    "llama-bpe": ("llama3", True, True, True),
    "falcon3": ("llama3", True, True, True),
    "pixtral": ("llama3", True, True, True),
    "gpt-2": ("gpt2", False, True, None),
    "phi-2": ("gpt2", False, True, None),
    "mpt": ("gpt2", False, True, None),
    "olmo": ("gpt2", False, True, None),
    "qwen2": ("qwen2", False, False, None),
    "deepseek-r1-qwen": ("qwen2", False, False, None),
    "megrez": ("qwen2", False, True, None),
    "stablelm2": ("qwen2", False, True, None),
    "smollm": ("starcoder", False, False, None),
    "starcoder": ("starcoder", False, True, None),
    "refact": ("starcoder", False, True, None),
    "codeshell": ("starcoder", False, True, None),
    "command-r": ("starcoder", False, False, None),
    "exaone": ("starcoder", False, True, None),
    "gpt-4o": ("gpt4o", False, False, None),
    "llama4": ("gpt4o", False, False, None),
}


def pre_type_of(pre: str | None) -> tuple[str, bool, bool, bool | None]:
    """Resolve ``tokenizer.ggml.pre`` (missing -> ``default``, as llama.cpp does)."""
    key = pre if pre else "default"
    try:
        return PRE_TYPES[key]
    except KeyError:
        known = ", ".join(sorted(PRE_TYPES))
        raise UnknownPreTokenizer(
            f"unknown pre-tokenizer tokenizer.ggml.pre={pre!r}; supported: {known}"
        ) from None


def _ranges_class(ranges: tuple[tuple[int, int], ...]) -> str:
    parts = []
    for a, b in ranges:
        parts.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
    return "".join(parts)


@cache
def _class_bodies() -> dict[str, str]:
    ws = tuple((c, c) for c in U.WHITESPACE)
    return {
        "L": _ranges_class(U.LETTER),
        "N": _ranges_class(U.NUMBER),
        "P": _ranges_class(U.PUNCTUATION),
        "S": _ranges_class(U.SYMBOL),
        "M": _ranges_class(U.ACCENT_MARK),
        "s": _ranges_class(ws),
    }


def translate(pattern: str) -> str:
    """Rewrite ``\\p{X}``/``\\s``/``\\S`` into llama.cpp's explicit classes (Oniguruma syntax)."""
    body = _class_bodies()
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "p" and pattern.startswith("{", i + 2):
                end = pattern.index("}", i + 3)
                name = pattern[i + 3 : end]
                if name not in body:
                    raise UnknownPreTokenizer(f"unicode class \\p{{{name}}} is not supported")
                out.append(body[name] if in_class else f"[{body[name]}]")
                i = end + 1
                continue
            if nxt == "s":
                out.append(body["s"] if in_class else f"[{body['s']}]")
                i += 2
                continue
            if nxt == "S":
                if in_class:
                    raise UnknownPreTokenizer("\\S inside a character class is not supported")
                out.append(f"[^{body['s']}]")
                i += 2
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


@cache
def regexes_for(pre_type: str) -> tuple[str, ...]:
    """The translated regex list for a llama.cpp pre-tokenizer type."""
    try:
        raw = _REGEXES[pre_type]
    except KeyError:
        raise UnknownPreTokenizer(f"no regexes for pre-tokenizer type {pre_type!r}") from None
    return tuple(translate(r) for r in raw)
