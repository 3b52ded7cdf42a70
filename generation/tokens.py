"""CLIP's BPE vocabulary (from the file open_clip ships) and prompt token counting.

Stable Diffusion's text encoder reads 77 tokens (75 plus start and end); the
rest of a longer prompt is silently ignored, so members are told.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files
from typing import Any

__all__ = ["CLIP_CONTEXT_TOKENS", "CLIP_VOCAB_SIZE", "clip_bpe_vocab", "clip_token_count"]

#: CLIP's vocabulary: 256 bytes, their end-of-word forms, 48,894 merges, 2 specials.
CLIP_VOCAB_SIZE = 49_408
#: Tokens the text encoder reads, start and end tokens included.
CLIP_CONTEXT_TOKENS = 77
_MERGES = CLIP_VOCAB_SIZE - 256 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable character table.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@lru_cache(maxsize=1)
def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's token -> id table and BPE merges, from open_clip's bundled vocabulary file."""
    path = files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [(a, b) for a, b in (line.split() for line in lines[1 : _MERGES + 1])]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE
    return {t: i for i, t in enumerate(tokens)}, merges


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges)


def clip_token_count(text: str) -> int:
    """Tokens CLIP's text encoder sees for ``text``, start and end tokens included."""
    return len(_tokenizer()(text, truncation=False).input_ids)
