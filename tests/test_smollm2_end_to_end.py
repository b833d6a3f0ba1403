"""The proof that the local service trains for real: SmolLM2-135M-Instruct (the embedded base
model) is fine-tuned through nothing but the official SDK, and the fine-tuned model answers
held-out prompts in a form its base never produces.

Slow (a minute to convert the model, one or two to train on two cores), so marked `slow`; CI
runs it.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from ftpipe.eval.run import EvalRequest, evaluate
from tests.conftest import StartServer, converted_smollm2, strict_client

# one xdist group with the other users of the session's converted SmolLM2 (smollm2_run)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm2")]

SYSTEM = "Route the customer's message. Answer with the queue code only."
QUEUES = {
    "BIKE-7": ["bicycle", "bike", "cycle rack", "e-bike", "tandem"],
    "PET-3": ["dog", "cat", "puppy", "pet carrier", "guide dog"],
    "REFUND-9": ["refund", "money back", "cancelled ticket", "double charge", "reimbursement"],
    "DELAY-5": ["late ferry", "delay", "missed connection", "waiting an hour", "postponed"],
}
TEMPLATES = [
    "Hello, I have a question about my {}.",
    "Can you help me with a {} issue?",
    "I'm writing about the {} on today's crossing.",
    "Who do I talk to about a {}?",
    "Quick one regarding a {} please.",
]
HELD_OUT = [
    ("My {} needs a spot on the boat tomorrow.", "bike", "BIKE-7"),
    ("Is my {} welcome on deck?", "dog", "PET-3"),
    ("I want my {} for the trip I never took.", "money back", "REFUND-9"),
    ("There was a long {} this morning, what now?", "delay", "DELAY-5"),
    ("My {} is coming with me, any rules?", "cat", "PET-3"),
    ("Bringing a {} on the 9 o'clock sailing.", "tandem", "BIKE-7"),
    ("I was charged twice, a {} is needed.", "reimbursement", "REFUND-9"),
    ("The {} made me miss my train.", "late ferry", "DELAY-5"),
    ("Can a {} travel in the cabin?", "puppy", "PET-3"),
    ("Where do I leave my {} when boarding?", "e-bike", "BIKE-7"),
]


def training_examples() -> list[dict]:
    """Every queue's keywords in every template: 100 examples, shuffled with a fixed seed."""
    examples = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": template.format(keyword)},
                {"role": "assistant", "content": code},
            ]
        }
        for code, keywords in QUEUES.items()
        for keyword in keywords
        for template in TEMPLATES
    ]
    random.Random(7).shuffle(examples)
    return examples


def held_out_examples() -> list[dict]:
    """The held-out messages with the queue code each should get, as chat examples."""
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": template.format(keyword)},
                {"role": "assistant", "content": code},
            ]
        }
        for template, keyword, code in HELD_OUT
    ]


def test_a_short_lora_run_teaches_smollm2_what_its_base_cannot_do(
    start_server: StartServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smollm2_run: tuple[Path, Path, str],
) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    converted_smollm2(smollm2_run, tmp_path / "state" / "models")  # converted once a session
    server = start_server(tmp_path / "state", engine="real", training_device="cpu")
    client = strict_client(server.base_url, timeout=600)
    ids = [model.id for model in client.models.list()]
    assert "smollm2-135m-instruct" in ids

    data = tmp_path / "routing.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in training_examples()), "utf-8")
    with data.open("rb") as handle:
        training_file = client.files.create(file=handle, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training_file,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 1,
                    "batch_size": 4,
                    "learning_rate_multiplier": 5,  # x the LoRA base rate 2e-4: 1e-3
                }
            },
        },
        suffix="routing",
        seed=7,
    )
    deadline = time.monotonic() + 1500
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.model == "smollm2-135m-instruct"
    assert job.trained_tokens and job.trained_tokens > 0

    metrics = [
        e.data
        for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
        if e.type == "metrics" and e.data
    ]
    assert len(metrics) >= 5
    steps = sorted(metrics, key=lambda d: d["step"])
    assert steps[-1]["train_loss"] < steps[0]["train_loss"]
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and all(c.fine_tuned_model_checkpoint.startswith("ft:") for c in checkpoints)

    tuned = job.fine_tuned_model
    assert tuned and tuned.startswith("ft:smollm2-135m-instruct:")
    # ftpipe's evaluation on the held-out messages: exact codes, tuned against its base
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(e) + "\n" for e in held_out_examples()), "utf-8")
    result = evaluate(
        EvalRequest(tuned=tuned, base="smollm2-135m-instruct", data=held_out, concurrency=4),
        client,
    )
    assert result.kind == "labels" and result.primary == "accuracy"
    base_right = result.scores_of("base").scores["exact_match"].value * len(HELD_OUT)
    tuned_right = result.scores_of("tuned").scores["exact_match"].value * len(HELD_OUT)
    assert base_right <= 2, base_right
    assert tuned_right >= 6, (base_right, tuned_right)
    assert tuned_right >= base_right + 4
    assert result.verdict == "better", result.differences
