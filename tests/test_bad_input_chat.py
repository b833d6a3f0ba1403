"""Bad input, second round: empty questions never reach the dialogue log, `prepare` names
replies without a question and unknown sentiments, and the facade, the CLI and image handling
fail in one clear line instead of a traceback, a warning or a wrong answer."""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from typer.testing import CliRunner

from ftpipe import chat, vision
from ftpipe.cli import app
from ftpipe.dialogue_log import DialogueLog, default_log_path
from ftpipe.errors import InputError
from ftpipe.openai_model import FacadeError, OpenAIModel
from ftpipe.prepare import mapping
from ftpipe.prepare.dialogues import read_dialogue_file, read_dialogue_log, split_conversations
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import PrepareResult, prepare

MODEL = "gpt-4o-mini"
REPO = Path(__file__).resolve().parents[1]
BLANK_QUESTIONS = ["", "   ", "\n\t "]
BLANK_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "empty-last-user": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": " "},
    ],
    "blank-text-part": [{"role": "user", "content": [{"type": "text", "text": "  "}]}],
    "no-user-message": [{"role": "system", "content": "You are the ferry desk."}],
}


def invoke(*args: str) -> Any:
    """The CLI in this process (stderr kept apart), as a user would run it."""
    return CliRunner().invoke(app, list(args))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- empty questions: refused everywhere, never logged ---------------------------------------


@pytest.mark.parametrize("question", BLANK_QUESTIONS)
def test_core_refuses_an_empty_question_and_logs_nothing(
    client: openai.OpenAI, tmp_path: Path, question: str
) -> None:
    log = DialogueLog(tmp_path / "dialogues.jsonl")
    with pytest.raises(InputError, match="question is empty"):
        chat.ask(client, question, model=MODEL, log=log)
    assert log.read() == []


@pytest.mark.parametrize("messages", BLANK_MESSAGES.values(), ids=list(BLANK_MESSAGES))
def test_core_refuses_messages_whose_question_is_empty(
    client: openai.OpenAI, tmp_path: Path, messages: list[dict[str, Any]]
) -> None:
    log = DialogueLog(tmp_path / "dialogues.jsonl")
    with pytest.raises(InputError, match="question is empty"):
        chat.ask(client, messages, model=MODEL, log=log)
    assert log.read() == []


def test_an_image_without_text_is_still_a_question() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    chat.check_question([{"role": "user", "content": [image]}])  # no error


@pytest.mark.parametrize("question", BLANK_QUESTIONS)
def test_cli_ask_refuses_an_empty_question_in_one_line_exit_2(question: str) -> None:
    result = invoke("ask", question)
    assert result.exit_code == 2, result.output
    assert one_line(result.stderr).startswith("ftpipe ask: the question is empty")
    assert result.stdout == ""
    assert not default_log_path().exists()


def test_chat_flow_task_refuses_an_empty_message(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftpipe.tasks import chat as chat_task

    monkeypatch.setattr(chat_task, "make_client", lambda: client)
    with pytest.raises(InputError, match="question is empty"):
        chat_task.answer.fn("  ", model=MODEL)
    assert not default_log_path().exists()
    assert chat_task.answer.fn("Hi", model=MODEL)["text"]  # the same path answers a question


# -- prepare: replies without a question, unknown sentiments ---------------------------------


def write_turns(path: Path, turns: list[dict[str, Any]]) -> Path:
    """A JSONL dialogue log, one turn a line, as `DialogueLog` writes it."""
    path.write_text("".join(json.dumps(turn) + "\n" for turn in turns), encoding="utf-8")
    return path


def exchange(n: int, sentiment: str | None = "positive") -> list[dict[str, Any]]:
    reply = {"role": "assistant", "content": f"Sailing {n} leaves at {n:02d}:15."}
    if sentiment:
        reply["sentiment"] = sentiment
    return [
        {"role": "system", "content": "You are the ferry desk."},
        {"role": "user", "content": f"When does sailing {n} leave?"},
        reply,
    ]


GOOD = [turn for n in range(14) for turn in exchange(n)]
# (line of the rejected turn, its column, its rule) for each bad block appended below
BAD_BLOCKS: list[tuple[list[dict[str, Any]], tuple[str, str, str]]] = [
    (  # what `ftpipe ask ''` logged: an empty question and its answer
        [
            {"role": "system", "content": ""},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "You asked nothing.", "sentiment": "neutral"},
        ],
        ("assistant", "role", "no_user_message"),
    ),
    (  # a reply with no user turn at all
        [
            {"role": "system", "content": "You are the refunds desk."},
            {"role": "assistant", "content": "Refunds take 5 days.", "sentiment": "neutral"},
        ],
        ("assistant", "role", "no_user_message"),
    ),
    (  # a sentiment outside the known set
        exchange(20, "happy"),
        ("system", "sentiment", "sentiment_unknown"),
    ),
    (  # ... whatever its case and padding
        exchange(21, " Joyful "),
        ("system", "sentiment", "sentiment_unknown"),
    ),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, PrepareResult]]:
    """One prepare run over a log holding every bad block (GX is slow to start: once)."""
    folder = tmp_path_factory.mktemp("bad-log")
    turns = GOOD + [turn for block, _ in BAD_BLOCKS for turn in block]
    log = write_turns(folder / "dialogues.jsonl", turns)
    options = PrepareOptions(model=MODEL, max_rejects=100)
    yield log, prepare([log], options, out_root=folder / "out")


def expected_rejects(log: Path) -> list[tuple[str, str, str, str]]:
    """(source, line, column, rule) of each bad block, the line found by role in the file."""
    line = len(GOOD)
    expected = []
    for block, (role, column, rule) in BAD_BLOCKS:
        offset = next(i for i, turn in enumerate(block) if turn["role"] == role)
        expected.append((str(log), str(line + offset + 1), column, rule))
        line += len(block)
    return expected


def test_prepare_rejects_replies_without_a_question_and_unknown_sentiments(
    prepared: tuple[Path, PrepareResult],
) -> None:
    log, result = prepared
    with (result.out_dir / "rejects.csv").open(newline="", encoding="utf-8") as handle:
        rejects = list(csv.DictReader(handle))
    got = [(r["source"], r["line"], r["column"], r["rule"]) for r in rejects]
    for reject in expected_rejects(log):
        assert reject in got
    assert {r["value"] for r in rejects if r["rule"] == "sentiment_unknown"} == {"happy", "joyful"}
    lines = result.train_path.read_text(encoding="utf-8").splitlines()
    if result.validation_path:
        lines += result.validation_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 14
    for line in lines:
        roles = [message["role"] for message in json.loads(line)["messages"]]
        assert "user" in roles


def test_the_report_counts_the_sentiment_rule_and_the_new_rule(
    prepared: tuple[Path, PrepareResult],
) -> None:
    _, result = prepared
    rules = {(r["check"], r["rule"]): r for r in result.report["rules"]}
    assert rules[("gx:dialogues", "sentiment_unknown")]["failed_rows"] == 2
    assert rules[("dialogues", "no_user_message")]["failed_rows"] == 2


def test_an_empty_question_in_mid_conversation_drops_only_its_reply(tmp_path: Path) -> None:
    log = write_turns(
        tmp_path / "chat.jsonl",
        [
            {"role": "system", "content": "You are the ferry desk."},
            {"role": "user", "content": "Is the ferry on time?"},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "  "},
            {"role": "assistant", "content": "Anything else?"},
        ],
    )
    result = split_conversations(read_dialogue_file(log), "chat.jsonl")
    [conversation] = result.conversations
    assert [m["content"] for m in conversation.messages] == [
        "You are the ferry desk.",
        "Is the ferry on time?",
        "Yes.",
    ]
    assert [(d.line, d.rule) for d in result.dropped] == [
        (4, "empty_content"),
        (5, "no_user_message"),
    ]


def test_a_log_written_by_old_ask_of_an_empty_question_yields_no_example(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "dialogues.jsonl")
    log.record_exchange(
        system=None, user="", assistant="Hm?", sentiment=None, model=MODEL, new_conversation=True
    )
    result = split_conversations(read_dialogue_file(log.path), "log")
    assert result.conversations == []
    assert [d.rule for d in result.dropped] == ["empty_content", "no_user_message"]


# -- the CLI and the facade: one clear error ---------------------------------------------------


@pytest.mark.parametrize("attempts", ["0", "-3"])
def test_cli_ask_with_attempts_below_one_is_one_line_exit_2(attempts: str) -> None:
    result = invoke("ask", "Hi", "--attempts", attempts)
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert line == f"ftpipe ask: attempts must be at least 1, got {attempts}"
    assert "Traceback" not in result.output
    assert not default_log_path().exists()


def test_core_attempts_below_one_is_an_input_error(client: openai.OpenAI) -> None:
    with pytest.raises(InputError, match="attempts must be at least 1, got 0"):
        chat.ask(client, "Hi", model=MODEL, attempts=0)


FACADE_MISUSE: list[tuple[Any, str]] = [
    *[(lambda m, q=q: m.ask(q), "ask: the question is empty") for q in BLANK_QUESTIONS],
    (lambda m: m.ask(None), "ask: question must be text, got NoneType"),
    (lambda m: m.ask(42), "ask: question must be text, got int"),
    (lambda m: m.ask(["Hi"]), "ask: question must be text, got list"),
    (lambda m: m.ask("Hi", attempts=0), "ask: attempts must be at least 1, got 0"),
    (lambda m: m.determine_sentiment(None), "determine_sentiment: text must be text"),
    (lambda m: m.describe_image(None), "describe_image: image_path must be a path"),
    (lambda m: m.describe_image_by_requests(3), "describe_image_by_requests: image_path"),
]


@pytest.mark.filterwarnings("ignore:The Assistants API:DeprecationWarning")
def test_facade_misuse_is_one_facade_error_and_logs_nothing() -> None:
    model = OpenAIModel()  # one model for every case: each starts nothing new
    for call, expected in FACADE_MISUSE:
        with pytest.raises(FacadeError) as raised:
            call(model)
        message = str(raised.value)
        assert message.startswith(expected), message
        assert "\n" not in message
    assert model.dialogue_log.read() == []


# -- images: deep greyscale, large images, bombs, the API's own words -------------------------


def save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("grey16.png", np.full((40, 60), 32768, dtype=np.uint16)),  # opens as I;16
        ("grey32.tiff", np.full((40, 60), 32768, dtype=np.int32)),  # opens as I
        ("float.tiff", np.full((40, 60), 0.5, dtype=np.float32)),  # opens as F
    ],
)
def test_deep_greyscale_is_scaled_before_it_is_described(
    client: openai.OpenAI, tmp_path: Path, name: str, array: np.ndarray
) -> None:
    path = save(tmp_path / name, array)
    description = vision.describe_image(client, path, model=MODEL).text
    assert "Dominant colours: gray 100%" in description, description
    prepared = vision.prepare_image(path)
    assert 120 <= decoded(prepared).convert("L").getpixel((30, 20)) <= 135


def test_a_dark_16_bit_image_stays_dark(tmp_path: Path) -> None:
    path = save(tmp_path / "dark.png", np.full((10, 10), 2000, dtype=np.uint16))
    assert decoded(vision.prepare_image(path)).convert("L").getpixel((5, 5)) < 16


def decoded(prepared: vision.PreparedImage) -> Image.Image:
    import base64
    import io

    payload = prepared.data_url.split(",", 1)[1]
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.fixture
def bomb_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised inside, Pillow's DecompressionBombWarning included."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield seen


def bombs(seen: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_100_megapixel_jpeg_is_downscaled_without_a_warning(
    client: openai.OpenAI, tmp_path: Path, bomb_warnings: list[warnings.WarningMessage]
) -> None:
    path = tmp_path / "huge.jpg"
    Image.new("L", (10_000, 10_000), 128).save(path, quality=70)
    description = vision.describe_image(client, path, model=MODEL).text
    assert "2048x2048" in description
    assert bombs(bomb_warnings) == []


def test_a_large_png_is_downscaled_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bomb_warnings: list[warnings.WarningMessage]
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # 100 MP scaled down to 1 MP
    path = tmp_path / "wide.png"
    Image.new("RGB", (1800, 1000), (200, 30, 30)).save(path)
    prepared = vision.prepare_image(path, max_side=900)
    assert (prepared.width, prepared.height, prepared.downscaled) == (900, 500, True)
    assert bombs(bomb_warnings) == []


def test_a_decompression_bomb_is_refused_in_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bomb_warnings: list[warnings.WarningMessage]
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # Pillow refuses over 2 MP
    path = tmp_path / "bomb.png"
    Image.new("L", (1500, 1500)).save(path)
    with pytest.raises(InputError) as raised:
        vision.prepare_image(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: is refused as a possible decompression bomb")
    assert "\n" not in message
    result = invoke("describe-image", str(path))
    assert result.exit_code == 1, result.output
    assert one_line(result.stderr).startswith(f"ftpipe describe-image: {path}: is refused")
    assert "Traceback" not in result.output
    assert bombs(bomb_warnings) == []


@pytest.fixture
def unreadable_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the endpoint cannot decode: the server's Pillow sees only an in-memory copy."""
    path = tmp_path / "scan.png"
    path.write_bytes(b"not really a png")

    def prepared(image_path: str | Path, **_: Any) -> vision.PreparedImage:
        url = vision.data_url("image/png", Path(image_path).read_bytes())
        return vision.PreparedImage(Path(image_path), "image/png", url, 1, 1, False)

    monkeypatch.setattr(vision, "prepare_image", prepared)
    return path


def test_api_image_errors_name_the_file_through_the_sdk(
    client: openai.OpenAI, unreadable_upload: Path
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        vision.describe_image(client, unreadable_upload, model=MODEL)
    error = raised.value
    assert error.status_code == 400
    assert error.message.startswith(f"Error code: 400 - {unreadable_upload}: ")
    assert error.body["message"].startswith(f"{unreadable_upload}: ")


def test_api_image_errors_name_the_file_through_raw_http(
    client: openai.OpenAI, unreadable_upload: Path
) -> None:
    base_url, key = vision.endpoint_and_key(client)
    with pytest.raises(vision.EndpointError) as raised:
        vision.describe_image_by_requests(base_url, key, unreadable_upload, model=MODEL)
    assert f"HTTP 400: {unreadable_upload}: " in str(raised.value)


LEAKED = "cannot identify image file <_io.BytesIO object at 0x7f3a2c1d0e50>"


def leaking_answer(request: httpx.Request) -> httpx.Response:
    """What an endpoint that passes Pillow's words on answers for an image it cannot read."""
    error = {"message": LEAKED, "type": "invalid_request_error", "param": None, "code": None}
    return httpx.Response(400, json={"error": error}, request=request)


def test_a_leaked_bytesio_is_replaced_by_the_file_through_the_sdk(tmp_path: Path) -> None:
    path = save(tmp_path / "photo.png", np.zeros((4, 4), dtype=np.uint8))
    transport = httpx.MockTransport(leaking_answer)
    client = openai.OpenAI(
        base_url="http://endpoint.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    with pytest.raises(openai.BadRequestError) as raised:
        vision.describe_image(client, path, model=MODEL)
    for text in (str(raised.value), raised.value.body["message"]):
        assert "BytesIO" not in text
        assert f"cannot identify image file '{path}'" in text


def test_a_leaked_bytesio_is_replaced_by_the_file_through_raw_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path / "photo.png", np.zeros((4, 4), dtype=np.uint8))
    monkeypatch.setattr(
        vision.httpx, "post", lambda url, **_: leaking_answer(httpx.Request("POST", url))
    )
    with pytest.raises(vision.EndpointError) as raised:
        vision.describe_image_by_requests("http://endpoint.test/v1", "k", path, model=MODEL)
    assert "BytesIO" not in str(raised.value)
    assert f"cannot identify image file '{path}'" in str(raised.value)


def test_cli_describe_image_names_the_file_the_api_could_not_read(
    client: openai.OpenAI, unreadable_upload: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ftpipe.client.make_client", lambda: client)
    result = invoke("describe-image", str(unreadable_upload))
    assert result.exit_code == 1, result.output
    line = one_line(result.stderr)
    assert str(unreadable_upload) in line and "BytesIO" not in line


# -- JSON errors read as English ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"role": "user", "content": "hi}]', "Unterminated string starting at line 1, column"),
        ('[{"role": "user", "content": "a\tb"}]', "Invalid control character at line 1, column"),
    ],
)
def test_json_errors_of_a_dialogue_log_say_at_once(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "log.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as raised:
        read_dialogue_file(path)
    assert expected in str(raised.value)
    assert "at at" not in str(raised.value)


def test_json_errors_of_a_jsonl_dialogue_log_say_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"role": "user", "content": "hi}\n', encoding="utf-8")
    [bad] = read_dialogue_log(path).bad_lines
    assert bad.value.startswith("Unterminated string starting at column 29: ")
    assert "at at" not in bad.value


# -- CSV headers: English and Russian, from one data file ---------------------------------------


def plan(columns: list[str], **options: Any) -> mapping.ColumnPlan:
    return mapping.plan_columns("export.csv", columns, PrepareOptions(**options))


def pair(user: str, assistant: str, system: str | None = None) -> dict[str, str]:
    return {"user": user, "assistant": assistant} | ({"system": system} if system else {})


# Capitalised Cyrillic is spelled with str methods: several capitals look like Latin letters.
@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["id", "вопрос", "ответ"], pair("вопрос", "ответ")),
        (["вопрос".title(), "ответ".upper()], pair("вопрос".title(), "ответ".upper())),
        (["запрос", "ответ оператора"], pair("запрос", "ответ оператора")),
        ([" Запрос ", "ответ_оператора".title()], pair(" Запрос ", "ответ_оператора".title())),
        (
            ["вопрос", "ответ", "системная инструкция".capitalize()],
            pair("вопрос", "ответ", "системная инструкция".capitalize()),
        ),
        (["сообщение  клиента", "ответ оператора"], pair("сообщение  клиента", "ответ оператора")),
        ([" Question ", "ANSWER  "], pair(" Question ", "ANSWER  ")),
        (["пользователь".title(), "ассистент".title()], pair("Пользователь", "ассистент".title())),
    ],
)
def test_russian_and_padded_headers_are_recognised(
    columns: list[str], expected: dict[str, str]
) -> None:
    result = plan(columns)
    assert (result.kind, result.columns) == ("column_pairs", expected)


@pytest.mark.parametrize(("text", "label"), [("текст", "метка"), ("отзыв", "тональность")])
def test_russian_text_and_label_headers_are_recognised(text: str, label: str) -> None:
    result = plan(["id", text.title(), f" {label} "])
    assert result.kind == "labelled_text"
    assert result.columns == {"text": text.title(), "label": f" {label} "}
    assert mapping.is_label_header([f" {text.upper()} "], PrepareOptions())


def test_header_names_live_in_one_shipped_data_file() -> None:
    data = json.loads((REPO / "data" / "column_names.json").read_text(encoding="utf-8"))
    assert tuple(tuple(names) for names in data["pairs"]) == mapping.PAIRS
    assert tuple(data["system"]) == mapping.SYSTEM_NAMES
    assert tuple(data["text"]) == mapping.TEXT_NAMES
    assert tuple(data["label"]) == mapping.LABEL_NAMES
    assert ("вопрос", "ответ") in mapping.PAIRS
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"column_names.json"' in pyproject
