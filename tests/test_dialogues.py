"""Dialogue logs: reading, splitting at system turns, drop records, filters and reader errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftpipe.errors import InputError
from ftpipe.prepare.dialogues import (
    Conversation,
    Dropped,
    Turn,
    find_dialogue_files,
    read_dialogue_file,
    split_conversations,
)

FIXTURE = Path(__file__).parent / "data" / "dialogues" / "ferry_desk.json"
SOURCE = "ferry_desk.json"


def split(
    sentiments: set[str] | None = None, redact: bool = False
) -> tuple[list[Conversation], list[Dropped]]:
    turns = read_dialogue_file(FIXTURE)
    result = split_conversations(turns, SOURCE, sentiments=sentiments, redact=redact)
    return result.conversations, result.dropped


def drops(dropped: list[Dropped]) -> list[tuple[int, str, str, str]]:
    return [(d.line, d.field, d.rule, d.value) for d in dropped]


def test_read_numbers_turns_from_one_and_normalises_sentiment() -> None:
    turns = read_dialogue_file(FIXTURE)
    assert len(turns) == 16
    assert turns[0] == Turn(1, "user", "Hello?", None, 2)
    assert turns[4].content == "  The last ferry leaves at 22:40.\n"
    assert turns[7].sentiment == "neutral"
    assert [t.index for t in turns] == list(range(1, 17))


def test_each_turn_knows_the_file_line_it_starts_on() -> None:
    """Turn 5 spans two lines of the fixture, so every later turn sits one line further down."""
    turns = read_dialogue_file(FIXTURE)
    assert [t.line for t in turns] == [2, 3, 4, 5, 6, *range(8, 19)]
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    for turn in turns:
        assert f'"role": "{turn.role}"' in lines[turn.line - 1]


def test_split_cuts_at_system_turns_and_keeps_the_prefix_conversation() -> None:
    conversations, _ = split()
    assert [(c.source, c.first_line) for c in conversations] == [
        (SOURCE, 2),
        (SOURCE, 4),
        (SOURCE, 13),
    ]
    assert conversations[0].messages == [
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "Hi! How can I help?"},
    ]
    ferry = conversations[1].messages
    assert ferry[0] == {"role": "system", "content": "You are the ferry desk."}
    assert [m["role"] for m in ferry] == ["system"] + ["user", "assistant"] * 3
    assert ferry[2]["content"] == "The last ferry leaves at 22:40."
    assert conversations[2].messages == [
        {"role": "system", "content": "You are the refunds desk."},
        {"role": "user", "content": "I want a refund for order 12345."},
        {"role": "assistant", "content": "Refunds take 5 days."},
    ]


def test_every_dropped_turn_is_recorded_with_its_file_line() -> None:
    _, dropped = split()
    assert drops(dropped) == [
        (8, "content", "empty_content", "   "),
        (15, "content", "empty_content", ""),
        (17, "role", "no_assistant_message", "system, user"),
    ]
    assert {d.source for d in dropped} == {SOURCE}


def test_sentiment_filter_drops_whole_exchanges_and_says_why() -> None:
    conversations, dropped = split(sentiments={"positive", "neutral"})
    assert [c.first_line for c in conversations] == [2, 4]
    assert [m["content"] for m in conversations[1].messages][-2:] == [
        "Can I pay with card 4111 1111 1111 1111? Mail me at ann.lee@example.com",
        "Yes. We will call you on +44 20 7946 0958.",
    ]
    assert drops(dropped) == [
        (8, "content", "empty_content", "   "),
        (12, "sentiment", "sentiment_filtered", "negative"),
        (15, "content", "empty_content", ""),
        (16, "sentiment", "sentiment_filtered", "missing"),
        (18, "sentiment", "sentiment_filtered", "missing"),
        (17, "role", "no_assistant_message", "system"),
    ]


def test_sentiment_filter_is_case_insensitive_and_strict() -> None:
    conversations, dropped = split(sentiments={"POSITIVE"})
    ferry = conversations[1].messages
    assert [m["role"] for m in ferry] == ["system", "user", "assistant"]
    assert (10, "sentiment", "sentiment_filtered", "neutral") in drops(dropped)


def test_redaction_applies_to_kept_content_only_when_asked() -> None:
    plain, _ = split()
    assert "4111 1111 1111 1111" in plain[1].messages[3]["content"]
    redacted, _ = split(redact=True)
    ferry = redacted[1].messages
    assert ferry[3]["content"] == "Can I pay with card [CARD]? Mail me at [EMAIL]"
    assert ferry[4]["content"] == "Yes. We will call you on [PHONE]."
    assert ferry[2]["content"] == "The last ferry leaves at 22:40."
    assert redacted[2].messages[1]["content"] == "I want a refund for order 12345."


def test_consecutive_same_role_turns_are_kept_and_exchanges_group_them() -> None:
    turns = [
        Turn(1, "user", "a", None, 1),
        Turn(2, "user", "b", None, 2),
        Turn(3, "assistant", "c", "positive", 3),
        Turn(4, "assistant", "d", "negative", 4),
        Turn(5, "user", "e", None, 5),
        Turn(6, "assistant", "f", "positive", 6),
    ]
    everything = split_conversations(turns, "x").conversations[0].messages
    assert [m["content"] for m in everything] == ["a", "b", "c", "d", "e", "f"]
    result = split_conversations(turns, "x", sentiments={"positive"})
    assert [m["content"] for m in result.conversations[0].messages] == ["e", "f"]
    assert drops(result.dropped) == [(4, "sentiment", "sentiment_filtered", "negative")]


def test_turns_made_only_of_empty_content_leave_no_extra_record() -> None:
    turns = [Turn(1, "user", " ", None, 1), Turn(2, "assistant", "", None, 2)]
    result = split_conversations(turns, "x")
    assert result.conversations == []
    assert [d.rule for d in result.dropped] == ["empty_content", "empty_content"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("  \n", "is empty"),
        ("[]", "holds no turns"),
        ('{"role": "user"}', "expected a JSON list of turns, found an object"),
        ('[\n  {"role": "user",}\n]', "is not valid JSON: Expecting property name"),
        ('[{"role": "user", "content": "hi"}, "hello"]', "turn 2 (line 1) is a string, expected"),
        ('[{"role": "user"},\n{"role": "user"},\n\n {"content": "x"}]', "turn 3 (line 4) has no"),
        ('[{"role": "tool", "content": "x"}]', 'turn 1 (line 1) has unknown role "tool"'),
        ('[{"role": null}]', "turn 1 (line 1) has unknown role null"),
        ('[{"role": "user", "content": ["x"]}]', 'turn 1 (line 1) has "content" a list, expected'),
        ('[{"role": "assistant", "sentiment": 1}]', 'turn 1 (line 1) has "sentiment" a number'),
        ('[{"role": "user"}] x', "is not valid JSON: Extra data at line 1, column 20"),
        ('[{"role": "user"},]', "is not valid JSON: Expecting value at line 1, column 19"),
        ("[", "is not valid JSON: Expecting value at line 1, column 2"),
    ],
)
def test_unreadable_logs_raise_one_line_input_errors(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "chat_log.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_dialogue_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "chat_log.json" in message
    assert expected in message
    assert "\n" not in message


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"role": "user",}\n]', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.json: .* at line 2, column 19$"):
        read_dialogue_file(path)


def test_unreadable_bytes_and_missing_files_are_input_errors(tmp_path: Path) -> None:
    binary = tmp_path / "latin.json"
    binary.write_bytes(b'[{"role": "user", "content": "caf\xe9"}]')
    with pytest.raises(InputError, match=r"latin\.json: is not UTF-8 text"):
        read_dialogue_file(binary)
    with pytest.raises(InputError, match=r"gone\.json: cannot be read"):
        read_dialogue_file(tmp_path / "gone.json")


def test_byte_order_mark_and_extra_keys_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf[{"role": "user", "content": "hi", "mood": 3}]')
    assert read_dialogue_file(path) == [Turn(1, "user", "hi", None, 1)]


def test_find_dialogue_files_recurses_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for name in [
        "b.json",
        "a/z.json",
        "a/deeper/c.json",
        ".git/d.json",
        "a/.backup.json",
        "a/notes.txt",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("[]", encoding="utf-8")
    (tmp_path / "folder.json").mkdir()
    found = find_dialogue_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/deeper/c.json",
        "a/z.json",
        "b.json",
    ]


def test_find_dialogue_files_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing: not a directory"):
        find_dialogue_files(tmp_path / "missing")
    assert find_dialogue_files(FIXTURE.parent) == [FIXTURE]
