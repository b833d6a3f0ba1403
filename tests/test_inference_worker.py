"""Real inference through the worker process: a tiny random Llama, LoRA adapters made with peft
and a full fine-tune, each compared with what transformers + peft compute directly."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftpipe.inference.client import Done, InferenceError, InferenceWorker
from tests.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the code word number 1?"},
]
GREEDY = {"temperature": 0, "max_tokens": 12}
ADAPTERS = ("a0", "a1", "a2")


@dataclass
class Models:
    base: Path
    adapters: dict[str, Path]
    full: Path
    expected: dict[str | None, str]  # greedy text of each (None: the base) for MESSAGES

    def folder(self, name: str | None) -> Path | None:
        return None if name is None else self.full if name == "full" else self.adapters[name]


def _greedy(model: object, tokenizer: object) -> str:
    import torch

    inputs = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_tensors="pt"
    )
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=GREEDY["max_tokens"])
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """A base model, three LoRA adapters that change its output, and a full fine-tune."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inference")
    base = build_tiny_model(root / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    expected: dict[str | None, str] = {
        None: _greedy(AutoModelForCausalLM.from_pretrained(base), tokenizer)
    }
    adapters = {}
    for seed, name in enumerate(ADAPTERS, start=1):
        torch.manual_seed(seed)
        tuned = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules="all-linear")
        )
        with torch.no_grad():
            for key, weight in tuned.named_parameters():
                if "lora_B" in key:
                    weight.normal_(0, 0.5)
        adapters[name] = root / "jobs" / name / "model"
        tuned.save_pretrained(adapters[name])
        tokenizer.save_pretrained(adapters[name])
        reloaded = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base), adapters[name]
        )
        expected[name] = _greedy(reloaded.eval(), tokenizer)
    full_model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(99)
    with torch.no_grad():
        for weight in full_model.parameters():
            weight.add_(torch.randn_like(weight) * 0.5)
    full = root / "jobs" / "full" / "model"
    full_model.save_pretrained(full)
    tokenizer.save_pretrained(full)
    expected["full"] = _greedy(AutoModelForCausalLM.from_pretrained(full), tokenizer)
    assert len(set(expected.values())) == len(expected), expected  # each one answers its own way
    return Models(base=base, adapters=adapters, full=full, expected=expected)


@pytest.fixture(scope="module")
def worker() -> Iterator[InferenceWorker]:
    """One worker for the module, holding at most two adapters (three are used: LRU evicts)."""
    with InferenceWorker(max_adapters=2, max_engines=2) as running:
        yield running


def ask(
    worker: InferenceWorker, models: Models, name: str | None = None, **options: object
) -> Done:
    options = {**GREEDY, **options}
    return worker.chat(
        MESSAGES, model_path=models.base, adapter_path=models.folder(name), **options
    )


def test_greedy_is_deterministic_and_matches_transformers(
    worker: InferenceWorker, models: Models
) -> None:
    first, second = ask(worker, models), ask(worker, models)
    assert first.choices[0].text == second.choices[0].text == models.expected[None]
    assert first.model == str(models.base)


def test_usage_is_exact(worker: InferenceWorker, models: Models) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.base)
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    done = ask(worker, models, "a0", temperature=1, seed=3, n=3)
    assert done.usage is not None
    assert done.usage.prompt_tokens == prompt
    assert done.usage.completion_tokens == sum(c.completion_tokens for c in done.choices)
    assert done.usage.total_tokens == prompt + done.usage.completion_tokens
    for choice in done.choices:
        ids = tokenizer(choice.text, add_special_tokens=False)["input_ids"]
        # every generated token is counted, the end-of-turn token included (never in the text)
        assert choice.completion_tokens >= len(ids) or "\ufffd" in choice.text


def test_seed_makes_sampling_reproducible(worker: InferenceWorker, models: Models) -> None:
    sampled = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 12}
    texts = [ask(worker, models, "a1", seed=seed, **sampled).choices[0].text for seed in range(4)]
    assert texts[0] == ask(worker, models, "a1", seed=0, **sampled).choices[0].text
    assert len(set(texts)) > 1


def test_n_gives_that_many_choices(worker: InferenceWorker, models: Models) -> None:
    done = ask(worker, models, temperature=1.0, seed=11, n=3)
    assert [choice.index for choice in done.choices] == [0, 1, 2]
    assert len({choice.text for choice in done.choices}) > 1
    greedy = ask(worker, models, "a0", n=2)
    assert [c.text for c in greedy.choices] == [models.expected["a0"]] * 2


def test_max_tokens_bounds_the_completion(worker: InferenceWorker, models: Models) -> None:
    done = ask(worker, models, "a2", max_tokens=5, n=2, temperature=1.0, seed=1)
    for choice in done.choices:
        assert choice.completion_tokens <= 5
        if choice.completion_tokens == 5:
            assert choice.finish_reason == "length"
    greedy = ask(worker, models, "a0", max_tokens=4)
    assert greedy.choices[0].finish_reason == "length"
    assert greedy.usage is not None and greedy.usage.completion_tokens == 4
    assert models.expected["a0"].startswith(greedy.choices[0].text)


def test_end_of_turn_token_stops_and_is_counted(
    worker: InferenceWorker, models: Models, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.base)
    base = AutoModelForCausalLM.from_pretrained(models.base)
    model = PeftModel.from_pretrained(base, models.adapters["a0"]).eval()
    inputs = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_tensors="pt"
    )
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=GREEDY["max_tokens"])
    generated = out[0, inputs["input_ids"].shape[1] :].tolist()
    end = next(i for i in range(2, len(generated)) if generated[i] not in generated[:i])
    # the same weights, with that token declared an end of turn in the generation config
    eos_base = shutil.copytree(models.base, tmp_path / "base-eos")
    config = json.loads((eos_base / "generation_config.json").read_text(encoding="utf-8"))
    config["eos_token_id"] = [tokenizer.eos_token_id, generated[end]]
    (eos_base / "generation_config.json").write_text(json.dumps(config), encoding="utf-8")
    done = worker.chat(MESSAGES, model_path=eos_base, adapter_path=models.adapters["a0"], **GREEDY)
    choice = done.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.completion_tokens == end + 1  # the end-of-turn token counts
    assert choice.text == tokenizer.decode(generated[:end], skip_special_tokens=True)
    assert worker.unload(model_path=eos_base)


def test_stop_cuts_the_text(worker: InferenceWorker, models: Models) -> None:
    full = models.expected["a1"]
    stop = next(ch for ch in full[2:] if ch.isascii() and ch.isalnum())
    done = ask(worker, models, "a1", stop=["never-there", stop])
    choice = done.choices[0]
    assert choice.text == full[: full.index(stop)]
    assert choice.finish_reason == "stop"
    assert choice.completion_tokens < GREEDY["max_tokens"]


def test_adapters_switch_per_request_and_lru_evicts(
    worker: InferenceWorker, models: Models
) -> None:
    order = ["a0", None, "a1", "a2", "a0", "full", None, "a2", "a1", "full", "a0"]
    for name in order:
        assert ask(worker, models).choices[0].text == models.expected[None]
        done = ask(worker, models, name)
        assert done.choices[0].text == models.expected[name], name
        assert done.model == str(models.folder(name) or models.base)
    loaded = worker.ping()["loaded"]
    assert set(loaded) == {str(models.base.resolve()), str(models.full.resolve())}
    assert len(loaded[str(models.base.resolve())]) == 2  # the bound held with three adapters


def test_unload_frees_and_reloads(worker: InferenceWorker, models: Models) -> None:
    ask(worker, models, "a2")
    adapter = str(models.adapters["a2"].resolve())
    assert adapter in worker.ping()["loaded"][str(models.base.resolve())]
    assert worker.unload(model_path=models.base, adapter_path=models.adapters["a2"])
    assert adapter not in worker.ping()["loaded"][str(models.base.resolve())]
    assert not worker.unload(model_path=models.base, adapter_path=models.adapters["a2"])
    assert ask(worker, models, None).choices[0].text == models.expected[None]
    assert ask(worker, models, "a2").choices[0].text == models.expected["a2"]
    ask(worker, models, "full")
    assert worker.unload(adapter_path=models.full)
    assert str(models.full.resolve()) not in worker.ping()["loaded"]


def test_stream_deltas_make_the_greedy_text(worker: InferenceWorker, models: Models) -> None:
    for name in ("a0", None, "full"):
        items = list(
            worker.stream(
                MESSAGES, model_path=models.base, adapter_path=models.folder(name), **GREEDY
            )
        )
        *deltas, done = items
        assert isinstance(done, Done) and all(item.type == "delta" for item in deltas)
        assert "".join(d.text for d in deltas) == done.choices[0].text == models.expected[name]
    sampled = worker.stream(
        MESSAGES, model_path=models.base, n=2, temperature=1.0, seed=5, max_tokens=10
    )
    *deltas, done = list(sampled)
    for choice in done.choices:
        assert "".join(d.text for d in deltas if d.index == choice.index) == choice.text


def test_abandoned_stream_is_cancelled(worker: InferenceWorker, models: Models) -> None:
    stream = worker.stream(
        MESSAGES, model_path=models.base, adapter_path=models.adapters["a0"], max_tokens=400
    )
    assert next(stream).type == "delta"
    stream.close()
    assert ask(worker, models, "a1").choices[0].text == models.expected["a1"]


def test_too_long_prompt_is_refused(worker: InferenceWorker, models: Models) -> None:
    long = [{"role": "user", "content": "The ferry leaves at nine. " * 200}]
    with pytest.raises(InferenceError) as raised:
        worker.chat(long, model_path=models.base, max_tokens=5)
    error = raised.value
    assert error.code == "context_length_exceeded"
    assert error.context_length == 512 and error.prompt_tokens is not None
    assert error.prompt_tokens > 512
    assert str(error.prompt_tokens) in error.message and "512" in error.message
    with pytest.raises(InferenceError) as raised:
        ask(worker, models, max_tokens=510)
    assert raised.value.code == "context_length_exceeded"
    assert raised.value.prompt_tokens is not None and raised.value.prompt_tokens < 512


def test_missing_folders_are_model_not_found(
    worker: InferenceWorker, models: Models, tmp_path: Path
) -> None:
    with pytest.raises(InferenceError) as raised:
        worker.chat(MESSAGES, model_path=tmp_path / "nothing")
    assert raised.value.code == "model_not_found"
    with pytest.raises(InferenceError) as raised:
        worker.chat(MESSAGES, model_path=models.base, adapter_path=tmp_path)
    assert raised.value.code == "model_not_found"
    assert ask(worker, models).choices[0].text == models.expected[None]


def test_a_broken_adapter_fails_alone(
    worker: InferenceWorker, models: Models, tmp_path: Path
) -> None:
    broken = shutil.copytree(models.adapters["a1"], tmp_path / "broken")
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InferenceError) as raised:
        worker.chat(MESSAGES, model_path=models.base, adapter_path=broken)
    assert raised.value.code == "inference_failed" and str(broken) in raised.value.message
    assert ask(worker, models).choices[0].text == models.expected[None]
    assert ask(worker, models, "a1").choices[0].text == models.expected["a1"]


def test_threads_are_served_in_turn(worker: InferenceWorker, models: Models) -> None:
    results: dict[str, str] = {}

    def run(name: str) -> None:
        results[name] = ask(worker, models, name).choices[0].text

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a0", "a1", "full")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {name: models.expected[name] for name in ("a0", "a1", "full")}


def test_a_killed_worker_fails_only_the_request_in_flight(
    worker: InferenceWorker, models: Models
) -> None:
    first = worker.ping()["pid"]
    os.kill(first, signal.SIGSTOP)  # the request below is surely in flight when the kill lands
    threading.Timer(0.5, os.kill, args=(first, signal.SIGKILL)).start()
    with pytest.raises(InferenceError) as raised:
        ask(worker, models, "a0")
    assert raised.value.code == "out_of_memory" and "SIGKILL" in raised.value.message
    assert ask(worker, models, "a0").choices[0].text == models.expected["a0"]
    second = worker.pid
    assert second is not None and second != first
    os.kill(second, signal.SIGKILL)  # dead while idle: the next request just starts a new one
    deadline = time.monotonic() + 30
    while worker.pid is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ask(worker, models, "a1").choices[0].text == models.expected["a1"]
    assert worker.pid not in (None, first, second)
