"""Which encoding a CSV file is in when it is not UTF-8: cp1251, cp1252, or "ask the user".

Any byte string decodes in a single-byte code page, so a wrong guess corrupts text silently
(latin-1 "à" is cp1251's Cyrillic "a"). Only bytes that are Cyrillic letters in cp1251 tell the
two apart, and only words give them away: Russian never puts a Cyrillic letter inside a Latin
word; Western languages never write a word of two or more accented letters and no plain ones.
A one-letter word (French "à", Russian "a") proves nothing. The side with the words wins when it
has enough of them and charset-normalizer finds its reading clean text; otherwise the user is
asked to choose, with the plausible encodings named.
"""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes
from charset_normalizer.md import mess_ratio

from ftpipe.errors import InputError

WESTERN = "cp1252"
CYRILLIC = "cp1251"
UTF8 = ("utf-8", "utf-8-sig")
SETTING = "encoding"
DESCRIPTIONS = {WESTERN: "Western European, a superset of latin-1", CYRILLIC: "Cyrillic"}
HINT = "rerun with --encoding NAME, or save the file as UTF-8"

MIN_WORDS = 2  # one word is "a few bytes"; two that agree, with none against, are evidence
DOMINANCE = 4  # Russian typed with a stray Latin letter does happen; not one word in four
MESS_LIMIT = 0.5  # charset-normalizer's mess ratio: clean short samples stay below ~0.4
_MESS_SAMPLE = 256 * 1024
_MESS_LINE = 256


def _cyrillic_bytes() -> bytes:
    """The bytes that are Cyrillic letters in cp1251: the only ones whose reading is in doubt."""
    found = []
    for byte in range(0x80, 0x100):
        char = bytes([byte]).decode(CYRILLIC, errors="replace")
        if "\u0400" <= char <= "\u04ff":
            found.append(byte)
    return bytes(found)


def _different_bytes() -> bytes:
    """The bytes that cp1251 and cp1252 read differently (or only one of them reads)."""
    return bytes(
        byte
        for byte in range(0x80, 0x100)
        if bytes([byte]).decode(CYRILLIC, errors="replace")
        != bytes([byte]).decode(WESTERN, errors="replace")
    )


_CYRILLIC_BYTES = _cyrillic_bytes()
_CYRILLIC_CLASS = b"".join(b"\\x%02x" % byte for byte in _CYRILLIC_BYTES)
_DIFFERENT = re.compile(b"[" + b"".join(b"\\x%02x" % byte for byte in _different_bytes()) + b"]")
_LETTER = b"[A-Za-z" + _CYRILLIC_CLASS + b"]"
# Words with a doubtful letter, matched from their first letter only (linear on long words).
_WORD = re.compile(b"(?<!" + _LETTER + b")[A-Za-z]*+[" + _CYRILLIC_CLASS + b"]" + _LETTER + b"*")
_ASCII_LETTER = re.compile(rb"[A-Za-z]")
_HIGH = re.compile(rb"[\x80-\xff]")


def check_encoding(name: str | None) -> str | None:
    """The codec's canonical name for a user's encoding setting; None means detect it."""
    if name is None:
        return None
    try:
        canonical = codecs.lookup(name).name
        "\n".encode(canonical)  # bytes-to-bytes codecs (base64, rot13) are not text encodings
    except (LookupError, UnicodeError) as exc:
        raise InputError(
            SETTING, f"{name!r} is not a text encoding Python knows (e.g. utf-8, cp1252, cp1251)"
        ) from exc
    return canonical


def decode_given(head: bytes, source: str, encoding: str, complete: bool) -> tuple[str, str]:
    """Decode the head in the encoding the user chose (a BOM still marks UTF-8 as utf-8-sig)."""
    if encoding == "utf-8" and head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=complete)
    except UnicodeDecodeError as exc:
        line = head.count(b"\n", 0, exc.start) + 1
        raise InputError(
            source,
            f"is not {encoding} text, the encoding given (undecodable byte 0x{head[exc.start]:02x} "
            f"on line {line}); {HINT}",
        ) from exc
    return encoding, text


def detect_single_byte(body: bytes, source: str) -> str:
    """cp1251 or cp1252 for a head that is not UTF-8; an InputError when the bytes do not say."""
    _reject_mixed(body, source)
    if not _DIFFERENT.search(body):
        return WESTERN  # only signs that read the same in both (quotes, dashes, no-break space)
    cyrillic, western = word_evidence(body)
    if cyrillic >= MIN_WORDS and cyrillic >= DOMINANCE * western:
        choice = CYRILLIC
    elif western >= MIN_WORDS and western >= DOMINANCE * cyrillic:
        choice = WESTERN
    else:
        raise _unsure(body, source)
    if not reads_cleanly(body, choice):
        raise _unsure(body, source)
    return choice


def word_evidence(body: bytes) -> tuple[int, int]:
    """(Cyrillic words, Western words): words of 2+ doubtful letters, and plain words with one."""
    cyrillic = western = 0
    for word in _WORD.findall(body):
        if _ASCII_LETTER.search(word):
            western += 1
        elif len(word) > 1:
            cyrillic += 1
    return cyrillic, western


def reads_cleanly(body: bytes, encoding: str) -> bool:
    """Whether charset-normalizer finds the lines with non-ASCII bytes clean text in `encoding`."""
    try:
        text = _non_ascii_lines(body).decode(encoding)
    except UnicodeDecodeError:
        return False
    return mess_ratio(text, MESS_LIMIT) < MESS_LIMIT


def _non_ascii_lines(body: bytes) -> bytes:
    """The lines that hold non-ASCII bytes, so that plain ASCII does not dilute the judgement,
    and only the start of each, so that one odd line (a cell of "яяяя...") does not decide."""
    lines = [line[:_MESS_LINE] for line in body.split(b"\n") if _HIGH.search(line)]
    return b"\n".join(lines)[:_MESS_SAMPLE]


def _reject_mixed(body: bytes, source: str) -> None:
    """A file with UTF-8 lines and lines in another encoding has no one encoding to read it in."""
    utf8 = other = 0
    for number, line in enumerate(body.split(b"\n"), 1):
        if not _HIGH.search(line):
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            other = other or number
        else:
            utf8 = utf8 or number
        if utf8 and other:
            raise InputError(
                source,
                f"mixes UTF-8 (line {utf8}) with another encoding (line {other}); save the "
                "whole file as UTF-8, or if it is one encoding after all, rerun with --encoding",
            )


def _unsure(body: bytes, source: str) -> InputError:
    """Name the first byte read two ways, its readings and the plausible encodings."""
    match = _DIFFERENT.search(body)
    assert match is not None
    byte = match.group()
    line = body.count(b"\n", 0, match.start()) + 1
    readings = ", ".join(
        f"{byte.decode(name, errors='replace')!r} in {name}" for name in (WESTERN, CYRILLIC)
    )
    return InputError(
        source,
        f"is not UTF-8 and its encoding is unclear (byte 0x{byte[0]:02x} on line {line} is "
        f"{readings}); plausible: {_plausible(body)}; {HINT}",
    )


def _plausible(body: bytes) -> str:
    """The candidates that read as clean text, or charset-normalizer's own best guess."""
    clean = [name for name in (WESTERN, CYRILLIC) if reads_cleanly(body, name)]
    if clean:
        return ", ".join(f"{name} ({DESCRIPTIONS[name]})" for name in clean)
    best = from_bytes(_non_ascii_lines(body)).best()
    if best is None:
        return "none of cp1252, cp1251 or any encoding charset-normalizer knows"
    return f"{best.encoding} (charset-normalizer's guess; neither cp1252 nor cp1251 reads it)"
