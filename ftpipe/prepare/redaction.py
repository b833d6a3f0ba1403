"""Personal data scrubbing, so e-mails, phones and card numbers in dialogues never reach training.

Replaces e-mail addresses with `[EMAIL]`, payment card numbers with `[CARD]` and phone numbers with
`[PHONE]`, in that order. Numbers are judged by shape, so ordinary figures survive:

- cards: 13-19 digits, contiguous or grouped 4-4-4-4(-3), 4-6-5 or 4-6-4 by spaces or dashes, and
  only when the Luhn checksum holds; a card-shaped number that fails it is left alone entirely;
- phones: 7-15 digits, as `+` international forms (spaces, dashes, dots, `(0)`/`(20)` groups),
  `(area) rest` forms, grouped national forms with one kind of separator that either start with a
  trunk `0` (`030 1234567`, `01 23 45 67 89`) or follow North American 3-4, 3-3-4, 1-3-3-4 grouping
  (area and local groups not starting with 0 or 1), and bare runs of 10-11 digits shaped like those;
- dates (`2024-05-01`, `01.05.2024`), times, prices, versions, years and short numbers stay, and so
  do bare 12-digit-and-longer runs that are neither cards nor `+` numbers.

Every pattern is bounded and anchored at word starts, so a long text is scanned in linear time.
"""

from __future__ import annotations

import re
from collections import Counter

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
CARD_TOKEN = "[CARD]"
KINDS = ("email", "card", "phone")
MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}(?![\w-])"
)
_CARD = re.compile(
    r"(?<![\w+])(?:"
    r"\d{13,19}"
    r"|\d{4}(?P<sep4>[ -])\d{4}(?P=sep4)\d{4}(?P=sep4)\d{1,4}(?:(?P=sep4)\d{3})?"
    r"|\d{4}(?P<sep6>[ -])\d{6}(?P=sep6)\d{4,5}"
    r")(?!\d)"
)
_PHONE = re.compile(
    r"(?<!\w)(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?[ .-]?\d{1,12}(?:[ .-]\d{1,12}){0,5}"
    r"|\(\d{2,5}\)[ .-]?\d{1,8}(?:[ .-]\d{1,8}){0,3}"
    r"|\d{1,8}(?P<sep>[ .-])\d{1,8}(?:(?P=sep)\d{1,8}){0,4}"
    r"|\d{10,11}"
    r")(?!\d)"
)
_DIGIT_RUN = re.compile(r"\d+")
_LOCAL_START = frozenset("23456789")


def redact(text: str, counts: Counter[str] | None = None) -> str:
    """Return `text` with e-mails, payment cards and phone numbers replaced by placeholders;
    each replacement is tallied by kind (`email`, `card`, `phone`) into `counts` when given."""
    return _redact(text, Counter() if counts is None else counts)


def redaction_counts(text: str) -> dict[str, int]:
    """How many of each kind `redact` would replace (`email`, `card`, `phone`), for reports."""
    counts: Counter[str] = Counter()
    _redact(text, counts)
    return {kind: counts[kind] for kind in KINDS}


def _redact(text: str, counts: Counter[str]) -> str:
    """Run the e-mail pass, then cards and phones, tallying replacements into `counts`."""
    if "@" in text:
        text, found = _EMAIL.subn(EMAIL_TOKEN, text)
        counts["email"] += found
    if _DIGIT_RUN.search(text):
        text = _redact_numbers(text, counts)
    return text


def _redact_numbers(text: str, counts: Counter[str]) -> str:
    """Settle card-shaped numbers first, so phones are only looked for in the text between them."""
    pieces: list[str] = []
    position = 0
    for match in _CARD.finditer(text):
        pieces.append(_redact_phones(text[position : match.start()], counts))
        pieces.append(_card_or_keep(match.group(), counts))
        position = match.end()
    pieces.append(_redact_phones(text[position:], counts))
    return "".join(pieces)


def _card_or_keep(candidate: str, counts: Counter[str]) -> str:
    """A card-shaped number is a card only when its Luhn checksum holds; otherwise it stays."""
    if not _luhn_ok(_digits(candidate)):
        return candidate
    counts["card"] += 1
    return CARD_TOKEN


def _luhn_ok(digits: str) -> bool:
    """The Luhn checksum every real payment card number satisfies (and 9 in 10 random ones fail)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _redact_phones(text: str, counts: Counter[str]) -> str:
    """Replace the longest valid phone at each candidate, stepping one digit group past a reject."""
    pieces: list[str] = []
    position = 0
    while (match := _PHONE.search(text, position)) is not None:
        length = _phone_length(match.group())
        if length:
            pieces.append(text[position : match.start()] + PHONE_TOKEN)
            counts["phone"] += 1
            position = match.start() + length
        else:
            step = _DIGIT_RUN.search(match.group())
            end = match.start() + (step.end() if step else len(match.group()))
            pieces.append(text[position:end])
            position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _phone_length(candidate: str) -> int:
    """Length of the longest prefix of `candidate` ending on a digit group that is a phone, or 0."""
    runs = list(_DIGIT_RUN.finditer(candidate))
    if sum(len(run.group()) for run in runs) < MIN_PHONE_DIGITS:
        return 0
    for end in reversed([run.end() for run in runs]):
        if _is_phone(candidate[:end]):
            return end
    return 0


def _is_phone(text: str) -> bool:
    """Whether a number-shaped text reads as a phone number rather than a date, price or id."""
    groups = _DIGIT_RUN.findall(text)
    if not MIN_PHONE_DIGITS <= sum(map(len, groups)) <= MAX_PHONE_DIGITS:
        return False
    if text[0] in "+(":
        return True
    if len(groups) == 1:
        return _is_bare_phone(groups[0])
    return not _looks_like_date(groups) and _is_national_grouping(groups)


def _is_bare_phone(digits: str) -> bool:
    """Unseparated runs count only in the 10-11 digit national shapes, not as any long id."""
    if digits[0] == "0":
        return len(digits) in (10, 11) and digits[1] != "0"
    if len(digits) == 11:
        return digits[0] == "1" and digits[1] in _LOCAL_START
    return len(digits) == 10 and digits[0] in _LOCAL_START


def _is_national_grouping(groups: list[str]) -> bool:
    """Trunk-prefixed (`0...`) groups, or North American 3-4, 3-3-4 and 1-3-3-4 groupings."""
    if groups[0][0] == "0":
        return len(groups[0]) >= 2
    sizes = [len(group) for group in groups]
    if sizes == [1, 3, 3, 4]:
        return groups[0] == "1" and groups[1][0] in _LOCAL_START
    return sizes in ([3, 4], [3, 3, 4]) and groups[0][0] in _LOCAL_START


def _looks_like_date(groups: list[str]) -> bool:
    """Year-month-day or day-month-year (either order of day and month) with plausible values."""
    if len(groups) != 3:
        return False
    first, second, third = groups
    if len(first) == 4:
        return _month_day(second, third)
    if len(third) == 4 and len(first) <= 2 and len(second) <= 2:
        return _month_day(second, first) or _month_day(first, second)
    return False


def _month_day(month: str, day: str) -> bool:
    """Whether the two groups can be a month (1-12) and a day (1-31)."""
    return 1 <= int(month) <= 12 and 1 <= int(day) <= 31


def _digits(text: str) -> str:
    """Only the digits of `text`, for checksums."""
    return "".join(char for char in text if char.isdigit())
