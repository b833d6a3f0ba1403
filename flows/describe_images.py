"""The `describe_images` flow: a folder of images in, a table of descriptions out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from ftpipe.errors import InputError
from ftpipe.tasks.backend import flow_backend, run_model
from ftpipe.tasks.common import run_bounded
from ftpipe.tasks.vision import describe_one
from ftpipe.vision import (
    Description,
    description_row,
    error_row,
    find_images,
    write_descriptions,
)

ARTIFACT_KEY = "image-descriptions"
DEFAULT_OUTPUT_ROOT = Path("data") / "processed" / "descriptions"


@flow(name="describe_images")
def describe_images(
    folder: str,
    prompt: str | None = None,
    model: str | None = None,
    pattern: str = "*",
    concurrency: int = 4,
    out_dir: str | None = None,
) -> dict[str, Any]:
    """Describe every image in a folder with a vision model; write CSV, Parquet and a table.

    Args:
        folder: Folder searched recursively for .png, .jpg, .jpeg, .webp and .gif files.
        prompt: What to ask about each image (default: "Describe this image.").
        model: A vision-capable chat model (default: the backend's default model).
        pattern: Glob pattern for file names, e.g. "scan_*" (the suffix filter still applies).
        concurrency: How many images are described at the same time (at least 1).
        out_dir: Folder for descriptions.csv and descriptions.parquet, outside the input
            folder (default: data/processed/descriptions/<folder name>).
    """
    with flow_backend(model) as settings:
        model = run_model(model, settings)
        if concurrency < 1:
            raise InputError("concurrency", f"must be at least 1, got {concurrency}")
        target = output_folder(folder, out_dir)
        images = [str(path) for path in find_images(folder, pattern)]
        logger = get_run_logger()
        if not images:
            logger.warning("No image files matching %r under %s", pattern, folder)
        rows = describe_all(images, prompt, model, concurrency)
        csv_path, parquet_path = write_descriptions(rows, target)
        failed = sum(1 for row in rows if row["error"])
        publish_table(rows, folder, failed)
        logger.info(
            "%d images described, %d failed; table in %s", len(rows) - failed, failed, target
        )
        return {
            "rows": rows,
            "described": len(rows) - failed,
            "failed": failed,
            "csv": str(csv_path),
            "parquet": str(parquet_path),
        }


def describe_all(
    images: list[str], prompt: str | None, model: str, concurrency: int
) -> list[dict[str, Any]]:
    """One row per image, in input order; at most `concurrency` requests at a time."""
    parameters = [{"path": path, "prompt": prompt, "model": model} for path in images]
    outcomes = run_bounded(describe_one, parameters, concurrency)
    return [
        description_row(Description(**value)) if ok else error_row(path, model, _reason(value))
        for (ok, value), path in zip(outcomes, images, strict=True)
    ]


def _reason(error: object) -> str:
    return f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)


def publish_table(rows: list[dict[str, Any]], folder: str, failed: int) -> None:
    create_table_artifact(
        rows,
        key=ARTIFACT_KEY,
        description=f"Descriptions of {len(rows)} images in {folder} ({failed} failed)",
    )


def output_folder(folder: str, out_dir: str | None) -> Path:
    """Where the tables go: never inside the input folder, which a later `ftpipe prepare` or
    describe run would then read as input."""
    target = Path(out_dir) if out_dir else DEFAULT_OUTPUT_ROOT / Path(folder).resolve().name
    if target.resolve().is_relative_to(Path(folder).resolve()):
        raise InputError(
            f"out_dir {target}", f"lies inside the input folder {folder}; choose one outside it"
        )
    return target
