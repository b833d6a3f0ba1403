"""`OpenAIModel`, every method through the embedded local server (one per test's FTPIPE_HOME).

The training methods run the real fine-tune flows, so they share one temporary Prefect server
for the module; the quick methods need none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from ftpipe import chat
from ftpipe.dialogue_log import DialogueLog, default_log_path
from ftpipe.errors import InputError
from ftpipe.openai_model import DEMO_QUESTIONS, FacadeError, OpenAIModel, main
from ftpipe.prepare.pipeline import prepare
from ftpipe.registry import default_registry
from tests.conftest import SAMPLES

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = json.loads((REPO / "data" / "assistants.json").read_text(encoding="utf-8"))
CATALOGUE_IDS = [entry["id"] for entry in CATALOGUE["assistants"]]
STAND_IN = "(local stand-in for gpt-4o-mini)"
POSITIVE_FEEDBACK = SAMPLES / "positive_feedback.csv"
IMAGES = {"png": (SAMPLES / "images" / "harbour.png"), "jpeg": (SAMPLES / "images" / "sunset.jpg")}
SIZES = {"png": "320x200 PNG", "jpeg": "160x120 JPEG"}


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run outside the repository: the fine-tune flows write data/processed under the working
    directory, and the catalogue and demo samples must be found from anywhere."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the training tests: starting it is slow."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def model() -> OpenAIModel:
    return OpenAIModel()


def user_turns(log_path: Path) -> list[dict]:
    return [turn for turn in DialogueLog(log_path).read() if turn["role"] == "user"]


def assert_job_on_server(model: OpenAIModel, job_id: str) -> None:
    assert job_id.startswith("ftjob-")
    assert model.client.fine_tuning.jobs.retrieve(job_id).id == job_id


def training_lines(model: OpenAIModel, job_id: str) -> list[dict]:
    """The chat examples the job was launched with, read back from the server."""
    job = model.client.fine_tuning.jobs.retrieve(job_id)
    text = model.client.files.content(job.training_file).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- models and assistants -----------------------------------------------------------------


def test_list_models_includes_the_default_model(model: OpenAIModel) -> None:
    models = model.list_models()
    assert "gpt-4o-mini" in models
    assert len(models) == len(set(models))


def test_list_assistants_has_the_catalogue(model: OpenAIModel) -> None:
    listed = model.list_assistants()
    assert [a["id"] for a in listed[: len(CATALOGUE_IDS)]] == CATALOGUE_IDS
    assert {"ferry-support", "sentiment-rater", "image-describer"} <= {a["id"] for a in listed}
    assert all(set(a) >= {"id", "name", "model", "instructions", "source"} for a in listed)


def test_set_assistant_applies_its_model_and_instructions() -> None:
    model = OpenAIModel(model_name="gpt-4.1-mini")
    chosen = model.set_assistant("ferry-support")
    entry = next(e for e in CATALOGUE["assistants"] if e["id"] == "ferry-support")
    assert chosen["id"] == model.assistant_id == "ferry-support"
    assert model.model_name == entry["model"]
    assert model.system_instruction == entry["instructions"]
    assert "System instruction received" in model.ask("Are dogs allowed?")


def test_the_constructor_applies_an_assistant() -> None:
    model = OpenAIModel(assistant_id="image-describer")
    assert model.assistant_id == "image-describer"
    assert model.system_instruction is not None
    assert model.system_instruction.startswith("Describe images factually")


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the Assistants API
def test_an_assistant_of_the_endpoint_can_be_set(model: OpenAIModel) -> None:
    made = model.client.beta.assistants.create(
        model="gpt-4o", name="Pirate", instructions="Speak like a pirate."
    )
    assert made.id in [a["id"] for a in model.list_assistants()]
    model.set_assistant(made.id)
    assert (model.model_name, model.system_instruction) == ("gpt-4o", "Speak like a pirate.")


def test_an_unknown_assistant_is_an_error_naming_the_known_ones(model: OpenAIModel) -> None:
    with pytest.raises(InputError) as raised:
        model.set_assistant("no-such-assistant")
    message = str(raised.value)
    assert "no-such-assistant" in message
    assert all(known in message for known in CATALOGUE_IDS)
    assert (model.assistant_id, model.model_name) == (None, "gpt-4o-mini")


# --- chat and sentiment ----------------------------------------------------------------------


def test_ask_returns_the_deterministic_reply_with_quotes_unescaped(model: OpenAIModel) -> None:
    question = """He said "hi" & 'bye' <b>twice</b>, \\n and left"""
    reply = model.ask(question)
    assert reply == f"{STAND_IN} You asked: {question}"
    assert '"hi"' in reply
    assert "&quot;" not in reply
    assert '\\"' not in reply


def test_ask_logs_the_exchange_with_the_replys_sentiment(model: OpenAIModel) -> None:
    question = "I love this wonderful ferry, the crew are great!"
    reply = model.ask(question)
    turns = DialogueLog(default_log_path()).read()
    assert [turn["role"] for turn in turns] == ["system", "user", "assistant"]
    user, assistant = turns[1], turns[2]
    assert user["content"] == question
    assert assistant["content"] == reply
    assert assistant["sentiment"] == model.determine_sentiment(reply) == "positive"
    assert assistant["model"] == "gpt-4o-mini-2024-07-18"  # the one that answered, as in `ask`


def test_ask_is_the_one_ask_sentiment_log_function(
    model: OpenAIModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The facade hands its dialogue log to `chat.ask`, as the CLI and the task do."""
    calls: list[dict] = []
    real_ask = chat.ask

    def spy(*args: object, **kwargs: object) -> chat.Reply:
        calls.append(kwargs)
        return real_ask(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(chat, "ask", spy)
    model.ask("Is the café open?")
    [call] = calls
    assert call["log"] is model.dialogue_log
    assert call["sentiment"] is not None
    assert [turn["content"] for turn in user_turns(default_log_path())] == ["Is the café open?"]


def test_ask_sends_the_system_instruction_and_options() -> None:
    model = OpenAIModel(system_instruction='Answer "briefly".', model_name="gpt-4.1-mini")
    reply = model.ask("Tell me about the island.", max_tokens=5, temperature=0.2)
    assert reply.startswith("(local stand-in")
    assert len(reply) < len("(local stand-in for gpt-4.1-mini) System instruction")
    full = model.ask("Tell me about the island.")
    assert 'System instruction received: "Answer "briefly"."' in full
    assert DialogueLog(default_log_path()).read()[0]["content"] == 'Answer "briefly".'


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love this ferry, the crew were wonderful!", "positive"),
        ("Great value, thanks a lot.", "positive"),
        ("This is terrible, I hate waiting in the rain.", "negative"),
        ("The ferry was late and the staff were rude.", "negative"),
        ("The ferry leaves from pier 3 at 06:15.", "neutral"),
    ],
)
def test_determine_sentiment_clear_cases(model: OpenAIModel, text: str, label: str) -> None:
    assert model.determine_sentiment(text) == label


# --- vision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["png", "jpeg"])
@pytest.mark.parametrize("method", ["describe_image", "describe_image_by_requests"])
def test_describe_image_mentions_its_size(model: OpenAIModel, method: str, kind: str) -> None:
    description = getattr(model, method)(IMAGES[kind])
    assert description.startswith(STAND_IN)
    assert SIZES[kind] in description
    assert description.endswith("You asked: Describe this image.")


def test_describe_image_takes_a_prompt(model: OpenAIModel) -> None:
    described = model.describe_image(str(IMAGES["png"]), prompt="What colours dominate?")
    assert described.endswith("You asked: What colours dominate?")
    by_http = model.describe_image_by_requests(str(IMAGES["png"]), prompt="What colours?")
    assert by_http.endswith("You asked: What colours?")


@pytest.mark.parametrize("method", ["describe_image", "describe_image_by_requests"])
def test_a_text_file_is_an_error_naming_it(model: OpenAIModel, method: str, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image at all\n", encoding="utf-8")
    with pytest.raises(InputError) as raised:
        getattr(model, method)(text_file)
    assert str(text_file) in str(raised.value)
    assert "not an image" in str(raised.value)


@pytest.mark.parametrize("method", ["describe_image", "describe_image_by_requests"])
def test_a_missing_image_is_an_error_naming_it(
    model: OpenAIModel, method: str, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.jpg"
    with pytest.raises(InputError, match="does not exist") as raised:
        getattr(model, method)(missing)
    assert str(missing) in str(raised.value)


# --- the loop closes: chat -> dialogue log -> dataset -> fine-tune ----------------------------


def ask_demo_questions(model: OpenAIModel) -> list[str]:
    return [model.ask(question) for question in DEMO_QUESTIONS]


def test_asked_questions_become_a_dialogue_dataset(model: OpenAIModel, tmp_path: Path) -> None:
    assert len(set(DEMO_QUESTIONS)) == 12
    replies = ask_demo_questions(model)
    log_path = default_log_path()
    assert [turn["content"] for turn in user_turns(log_path)] == list(DEMO_QUESTIONS)
    result = prepare([log_path.parent], out_root=tmp_path / "processed")
    [source] = result.report["sources"]
    assert source["kind"] == "dialogues"
    assert source["examples"] == 12
    assert result.report["counts"]["examples"] == 12
    outputs = [result.report["outputs"][name] for name in ("train", "validation")]
    examples = [
        json.loads(line)
        for output in outputs
        if output
        for line in Path(output).read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(example["messages"][-1]["content"] for example in examples) == sorted(replies)


@pytest.mark.usefixtures("prefect_server")
def test_dynamic_train_fine_tunes_on_the_saved_dialogues(model: OpenAIModel) -> None:
    ask_demo_questions(model)
    job_id = model.dynamic_train()
    assert_job_on_server(model, job_id)
    asked = {
        message["content"]
        for example in training_lines(model, job_id)
        for message in example["messages"]
        if message["role"] == "user"
    }
    assert asked <= set(DEMO_QUESTIONS)
    assert len(asked) >= 10  # the rest went to the validation split
    assert default_registry().get(job_id) is not None


@pytest.mark.usefixtures("prefect_server")
def test_train_on_a_csv_file_and_on_csv_text(model: OpenAIModel) -> None:
    from_file = model.train(data_file=POSITIVE_FEEDBACK)  # a Path, as the original took
    assert_job_on_server(model, from_file)
    assert model.train(data_file=str(POSITIVE_FEEDBACK)) == from_file  # the same dataset
    assert model.train(data=POSITIVE_FEEDBACK) == from_file  # `data` may name the file too
    assert model.train(data=str(POSITIVE_FEEDBACK)) == from_file
    texts = [f"Trip number {index} was a real pleasure" for index in range(12)]
    from_text = model.train(data="text\n" + "\n".join(texts))
    assert_job_on_server(model, from_text)
    assert from_text != from_file
    examples = training_lines(model, from_text)
    assert {example["messages"][-1]["content"] for example in examples} == {"positive"}
    assert {example["messages"][-2]["content"] for example in examples} <= set(texts)
    negative = model.train(data="text\n" + "\n".join(texts), positive=False)
    assert negative not in (from_file, from_text)
    assert {e["messages"][-1]["content"] for e in training_lines(model, negative)} == {"negative"}


def test_train_without_data_is_a_clear_error(model: OpenAIModel) -> None:
    with pytest.raises(ValueError, match="data"):
        model.train()


@pytest.mark.usefixtures("prefect_server")
def test_train_on_a_folder_given_as_a_path(model: OpenAIModel, tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    (folder / "positive.csv").write_bytes(POSITIVE_FEEDBACK.read_bytes())
    assert_job_on_server(model, model.train(data_dir=folder))


@pytest.mark.usefixtures("prefect_server")
def test_a_failed_training_is_one_plain_error(model: OpenAIModel, tmp_path: Path) -> None:
    """Not the flow's and the task's chained tracebacks: one error whose text names the file."""
    missing = tmp_path / "missing.csv"
    with pytest.raises(FacadeError) as raised:
        model.train(data_file=missing)
    error = raised.value
    assert str(error) == f"{missing}: does not exist"
    assert error.__cause__ is None and error.__suppress_context__
    assert isinstance(error.cause, InputError)
    assert default_registry().jobs() == []


def test_from_ftpipe_import_openai_model_and_import_ftpipe_stays_cheap() -> None:
    code = (
        "import sys, ftpipe; assert 'openai' not in sys.modules, 'import ftpipe loaded openai'; "
        "from ftpipe import OpenAIModel; from ftpipe.openai_model import OpenAIModel as Real; "
        "assert OpenAIModel is Real; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.usefixtures("prefect_server")
def test_save_job_id_writes_job_ids_json_and_the_registry(
    model: OpenAIModel, isolated_env: Path, tmp_path: Path
) -> None:
    job_id = model.train(data_file=str(POSITIVE_FEEDBACK))
    path = model.save_job_id(job_id, "first try: positive feedback")
    assert path == isolated_env / "job_ids.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    assert {"id": job_id, "description": "first try: positive feedback"}.items() <= next(
        entry for entry in entries if entry["id"] == job_id
    ).items()
    assert all(set(entry) == {"id", "description", "created"} for entry in entries)
    record = default_registry().get(job_id)
    assert record is not None
    assert record.description == "first try: positive feedback"
    assert record.fine_tuned_model  # saving the description keeps what the job already had
    elsewhere = model.save_job_id(job_id, "renamed", filename=str(tmp_path / "ids.json"))
    assert elsewhere == tmp_path / "ids.json"
    [entry] = [e for e in json.loads(elsewhere.read_text()) if e["id"] == job_id]
    assert entry["description"] == "renamed"


def test_save_job_id_records_an_id_the_endpoint_does_not_know(
    model: OpenAIModel, isolated_env: Path
) -> None:
    """As the original did: the id is saved (with a warning), not refused."""
    with pytest.warns(UserWarning, match="ftjob-from-elsewhere"):
        path = model.save_job_id("ftjob-from-elsewhere", "trained by hand")
    entries = json.loads(path.read_text(encoding="utf-8"))
    [entry] = [e for e in entries if e["id"] == "ftjob-from-elsewhere"]
    assert entry["description"] == "trained by hand"
    assert entry["created"]
    record = default_registry().get("ftjob-from-elsewhere")
    assert record is not None and record.description == "trained by hand"


@pytest.mark.usefixtures("prefect_server")
def test_main_runs_every_step(isolated_env: Path) -> None:
    printed: list[str] = []
    results = main(echo=printed.append)
    assert set(results) == {
        "models",
        "assistants",
        "reply",
        "dynamic_train_job",
        "train_job",
        "saved_job_ids",
        "image_description",
    }
    assert "gpt-4o-mini" in results["models"]
    assert results["assistants"][: len(CATALOGUE_IDS)] == CATALOGUE_IDS
    assert results["reply"].endswith(f"You asked: {DEMO_QUESTIONS[0]}")
    assert results["dynamic_train_job"] != results["train_job"]
    saved = json.loads(Path(results["saved_job_ids"]).read_text(encoding="utf-8"))
    assert results["train_job"] in [entry["id"] for entry in saved]
    assert "320x200 PNG" in results["image_description"]
    assert len(printed) == 7
    assert results["train_job"] in printed[5]
