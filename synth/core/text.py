"""Text identity: the one normaliser (when are two texts "the same"?) and the one content id.

- ``normal_text`` is what every duplicate, leak and exclusion check compares.
- ``content_id`` names a thing by what it is: a text, or a tuple of ids and a seed. It is the same in
  every process, run and Python version, so a resumed or repeated run yields the same ids.
- ``truncate`` cuts a passage for a prompt (generation and the LLM judges cut alike).
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata

_SPACE = re.compile(r"\s+")
_EDGE = set(string.punctuation)


def _is_edge(ch: str) -> bool:
    return ch in _EDGE or ch.isspace() or unicodedata.category(ch).startswith("P")


def normal_text(text: str, *, loose: bool = False) -> str:
    """``text`` with whitespace runs collapsed to one space, trimmed, and casefolded.

    ``loose`` also applies NFKC and strips punctuation at both ends. It exists because the two kinds of
    callers compare different things: mining, mixing, leakage and fn-risk compare texts from the user's
    data, where "What is X?" and "What is X" may well be distinct records, and mining's prefilter
    (``exclusions._visible_length``) relies on only whitespace being removed; generation compares what an LLM
    wrote, whose answers differ in a trailing "?" or a full-width letter while meaning the same query.
    Changing either would change which rows a run excludes or keeps (and persona ids).
    """
    if not loose:
        return " ".join(text.split()).casefold()
    s = _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    start, end = 0, len(s)
    while start < end and _is_edge(s[start]):
        start += 1
    while end > start and _is_edge(s[end - 1]):
        end -= 1
    return s[start:end]


def content_id(*parts: object, n: int = 16) -> str:
    """First ``n`` hex digits of blake2b over the parts (``str`` of each, joined with a unit separator).
    Lone surrogates (possible in JSON input) are hashed as they are rather than refused."""
    data = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data).hexdigest()[:n]


_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())
_ASCII_NOT_ALNUM = bytes(c for c in range(128) if not chr(c).isalnum())
_NOT_WORD = re.compile(r"[\W_]+")


def near_duplicate_key(text: str) -> bytes:
    """What is left of ``normal_text(text)`` after NFKC and removing every character that is not a letter or
    a digit: two passages with the same key differ only in case, whitespace, punctuation, symbols or Unicode
    compatibility forms (a copy re-scraped or re-encoded). Texts with the same ``normal_text`` always have the
    same key. Model-agnostic and one pass over the corpus: ASCII text (most corpora) takes a C-speed byte
    translation (~1 us a passage), other text a regex; a pairwise similarity (Jaccard, cosine) would not
    scale to the corpus."""
    if text.isascii():  # NFKC is the identity and casefold is lower() on ASCII
        return text.encode("ascii").translate(_ASCII_LOWER, _ASCII_NOT_ALNUM)
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", normal_text(text))).encode("utf-8", "surrogatepass")


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when one is near the end."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[: max(max_chars - 1, 0)]
    space = cut.rfind(" ")
    if space >= 0.8 * len(cut):
        cut = cut[:space]
    return cut.rstrip() + "…"
