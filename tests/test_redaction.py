"""Personal data redaction: what must be replaced, what must survive, and that it stays fast."""

from __future__ import annotations

import time

import pytest

from ftpipe.prepare.redaction import redact, redaction_counts


@pytest.mark.parametrize(
    "email",
    [
        "ann@example.com",
        "ann.lee+ferry@mail.example.co.uk",
        "o.neil_2@sub-domain.example.org",
        "x@y.io",
    ],
)
def test_email_addresses_are_replaced(email: str) -> None:
    assert redact(f"Write to {email}, please.") == "Write to [EMAIL], please."


def test_email_keeps_surrounding_punctuation() -> None:
    assert redact("<ann@example.com>; (bob@example.net).") == "<[EMAIL]>; ([EMAIL])."
    assert redact("not an address: ann@localhost or @handle") == (
        "not an address: ann@localhost or @handle"
    )


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+1 (555) 123-4567",
        "+1-555-123-4567",
        "+33 1 23 45 67 89",
        "+4915112345678",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "1-800-555-1234",
        "555-1234",
        "030 1234567",
        "07700 900123",
        "01 23 45 67 89",
        "020-1234567",
        "0049 30 12345678",
        "5551234567",
        "07700900123",
    ],
)
def test_phone_numbers_are_replaced(phone: str) -> None:
    assert redact(f"Call me on {phone} tonight.") == "Call me on [PHONE] tonight."
    assert redact(phone) == "[PHONE]"


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5500 0000 0000 0004",
        "3782 822463 10005",
        "6011000990139424",
        "4222222222222",
    ],
)
def test_luhn_valid_card_numbers_are_replaced(card: str) -> None:
    assert redact(f"My card is {card}.") == "My card is [CARD]."


@pytest.mark.parametrize(
    "number",
    ["4111 1111 1111 1112", "4111111111111112", "1234-5678-9012-3456", "0234 5678 9012 3456"],
)
def test_card_shaped_numbers_failing_luhn_stay_whole(number: str) -> None:
    assert redact(f"Reference {number}.") == f"Reference {number}."


@pytest.mark.parametrize(
    "text",
    [
        "We sail on 2024-05-01 at 10:30.",
        "Booked for 01.05.2024, back 31/12/2024.",
        "Between 09:15 and 17:45:30 daily.",
        "It costs $1,234.56, or 1 234 567,89 EUR, or €12.99.",
        "Your order 12345 shipped; ticket #987654.",
        "Upgrade from 1.2.3 to 10.0.19041.1 first.",
        "Open since 1999, renovated 2020 2021 2022.",
        "Route 66 runs 2448 miles.",
        "Seat 12-34, gate 5.",
        "ZIP 94107-1234, host 192.168.100.200.",
        "Epoch 1714567890 and id 123456789012.",
        "Coordinates 51.5074, -0.1278.",
    ],
)
def test_ordinary_numbers_are_not_redacted(text: str) -> None:
    assert redact(text) == text


def test_cards_are_settled_before_phones() -> None:
    assert redact("call 555 4111 1111 1111 1111") == "call 555 [CARD]"


def test_neighbouring_numbers_do_not_hide_a_phone() -> None:
    assert redact("On 2024-05-01 555-123-4567 called.") == "On 2024-05-01 [PHONE] called."
    assert redact("Lines 555 123 4567 555 987 6543.") == "Lines [PHONE] [PHONE]."
    assert redact("Ring 555 123 4567 2024") == "Ring [PHONE] 2024"


def test_everything_together_and_counts() -> None:
    text = (
        "Hi, I'm ann@example.com, card 4111 1111 1111 1111, "
        "phone +44 20 7946 0958 or 555-123-4567, order 12345 on 2024-05-01."
    )
    assert redact(text) == (
        "Hi, I'm [EMAIL], card [CARD], phone [PHONE] or [PHONE], order 12345 on 2024-05-01."
    )
    assert redaction_counts(text) == {"email": 1, "card": 1, "phone": 2}
    assert redaction_counts("nothing here") == {"email": 0, "card": 0, "phone": 0}


def test_plain_text_is_returned_unchanged() -> None:
    assert redact("") == ""
    assert redact("Just words, no numbers.") == "Just words, no numbers."


@pytest.mark.parametrize(
    "text",
    [
        "Order 12345 on 2024-05-01 at 10:30 costs $12.99; mail ann@example.com. " * 10_000,
        "1 " * 100_000,
        "+" + "1-" * 100_000,
        "a" * 200_000 + "@",
        "x@" + "a-" * 100_000,
        "9" * 200_000,
    ],
)
def test_long_texts_are_fast(text: str) -> None:
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 2.0
