"""A tiny CLIP-format BPE tokenizer for the demo grammar: every grammar word is exactly one token.

The demo model's text encoder is a CLIP text model, so its tokenizer must be loadable by
``transformers.CLIPTokenizer`` like a real checkpoint's. CLIP's BPE lowercases, splits words,
maps bytes to printable unicode (GPT-2 table) and appends ``</w>`` to a word's last symbol. The
vocabulary is CLIP's layout cut down: the 256 byte symbols, their ``</w>`` forms (so any text still
tokenizes, character by character), one entry per merge, then ``<|startoftext|>`` and
``<|endoftext|>`` (eos is the largest id, as in CLIP, so ``argmax(input_ids)`` finds it).
Merges are found by simulating CLIP's BPE: for each word, whatever the earlier merges leave is
joined left to right by new, lower-priority merges, which cannot change words already built.

``<|endoftext|>`` is also the pad token (as in the OpenAI CLIP / SD 1.x tokenizers): padding then
reads as repeated eos, so use ``attention_mask`` (or the first eos) rather than ``ids != pad``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..errors import MGTInputError
from .scenes import grammar_words

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
PAD = EOS
MAX_LENGTH = 24
"""Positions of the demo text encoder (bos + up to 22 tokens + eos); the longest prompt has 14."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable latin-1 maps to itself)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _symbols(word: str) -> list[str]:
    enc = bytes_to_unicode()
    chars = [enc[b] for b in word.encode("utf-8")]
    return [*chars[:-1], chars[-1] + "</w>"]


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: repeatedly merge the adjacent pair with the lowest rank."""
    syms = _symbols(word)
    while len(syms) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(syms, syms[1:], strict=False))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        first, second = syms[i], syms[i + 1]
        out, j = [], 0
        while j < len(syms):  # merge every occurrence of the pair, left to right, as CLIP does
            if j < len(syms) - 1 and syms[j] == first and syms[j + 1] == second:
                out.append(first + second)
                j += 2
            else:
                out.append(syms[j])
                j += 1
        syms = out
    return syms


def build_merges(words) -> list[tuple[str, str]]:
    """Merges (in rank order) that make each word a single token under CLIP's BPE."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted(set(words), key=lambda w: (-len(w), w)):
        if not word or word != word.lower() or any(c.isspace() for c in word):
            raise MGTInputError(f"tokenizer words must be lowercase without spaces, got {word!r}")
        for _ in range(4 * len(word) + 4):
            syms = bpe(word, ranks)
            if len(syms) == 1:
                break
            acc = syms[0]
            for s in syms[1:]:
                if (acc, s) not in ranks:
                    ranks[(acc, s)] = len(merges)
                    merges.append((acc, s))
                acc += s
        else:  # pragma: no cover - the left-to-right construction always converges
            raise MGTInputError(f"could not build merges for {word!r}")
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [BOS, EOS]
    if len(set(tokens)) != len(tokens):
        raise MGTInputError("duplicate tokens in the demo vocabulary")
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(folder: str | Path, words=None, max_length: int = MAX_LENGTH) -> Path:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = build_merges(grammar_words() if words is None else words)
    vocab = build_vocab(merges)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "do_lower_case": True,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def load_tokenizer(folder: str | Path):
    """``CLIPTokenizer.from_pretrained(folder, local_files_only=True)``: reads all four files."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def clip_tokenizer_from_files(vocab_file: str | Path, merges_file: str | Path, max_length: int = MAX_LENGTH):
    """Build a CLIPTokenizer straight from the two files on transformers 4.x and 5.x.

    transformers 5 renamed the constructor arguments to ``vocab``/``merges`` and silently ignores
    ``vocab_file``/``merges_file`` (every word then becomes ``<|endoftext|>``), so pick by signature.
    """
    import inspect

    from transformers import CLIPTokenizer

    params = inspect.signature(CLIPTokenizer.__init__).parameters
    if "vocab_file" in params:
        tok = CLIPTokenizer(vocab_file=str(vocab_file), merges_file=str(merges_file), pad_token=PAD)
    else:
        tok = CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), pad_token=PAD)
    tok.model_max_length = max_length
    return tok
