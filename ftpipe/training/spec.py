"""What one training job is asked to do: the server writes it as `<job_dir>/spec.json`.

Pydantic only (no torch), so the HTTP layer can build and validate a spec before any worker starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ftpipe.training.protocol import SPEC

Auto = Literal["auto"]

# ftpipe's own knobs (OpenAI has no equivalent); reachable through `extra_body` on job creation.
DEFAULT_LORA_RANK = 8  # enough capacity for format/label learning on 0.1-2B models
DEFAULT_LORA_ALPHA = 16  # alpha = 2 x rank, the usual scale (LoRA update scaled by alpha/rank)
DEFAULT_LORA_DROPOUT = 0.05  # a little regularisation for the small datasets users bring
DEFAULT_MAX_SEQ_LENGTH = 1024  # keeps CPU memory and step time bounded; longer examples truncate
DEFAULT_MAX_MICRO_BATCH = 4  # largest batch in one forward pass; bigger batches accumulate
DEFAULT_CHECKPOINTS_KEPT = 3  # OpenAI keeps the last three epochs' checkpoints


class TrainingSpec(BaseModel):
    """One job's inputs: data, base model, OpenAI hyperparameters and ftpipe's own knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    base_model: str = Field(description="The id the user asked for, e.g. smollm2-135m-instruct")
    base_model_path: Path | None = Field(
        default=None, description="Its local HF folder; None lets the worker resolve the id"
    )
    models_dir: Path | None = Field(
        default=None, description="Where converted base models are cached (<state_dir>/models)"
    )
    training_file: Path
    validation_file: Path | None = None
    method: Literal["lora", "full"] = "lora"

    # OpenAI's method.supervised.hyperparameters
    n_epochs: PositiveInt | Auto = "auto"
    batch_size: PositiveInt | Auto = "auto"
    learning_rate_multiplier: PositiveFloat | Auto = "auto"
    seed: int = 42

    # ftpipe's own knobs
    lora_rank: PositiveInt = DEFAULT_LORA_RANK
    lora_alpha: PositiveInt = DEFAULT_LORA_ALPHA
    lora_dropout: float = Field(default=DEFAULT_LORA_DROPOUT, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    max_seq_length: PositiveInt = DEFAULT_MAX_SEQ_LENGTH
    gradient_accumulation: PositiveInt | Auto = "auto"
    max_micro_batch: PositiveInt = DEFAULT_MAX_MICRO_BATCH
    threads: PositiveInt = Field(default=1, description="CPU threads of the worker")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoints_kept: PositiveInt = DEFAULT_CHECKPOINTS_KEPT
    eval_steps: PositiveInt | None = Field(
        default=None, description="Also evaluate every N steps; epoch ends are always evaluated"
    )

    output_dir: Path | None = Field(
        default=None, description="Where model/ and checkpoints/ go; None: the job folder"
    )
    resume_from: Path | None = Field(
        default=None, description="A checkpoint folder (checkpoints/step-N) to continue from"
    )
    allow_downloads: bool = False

    def to_json(self) -> str:
        """The text of spec.json."""
        return self.model_dump_json(indent=2)

    @classmethod
    def read(cls, job_dir: Path) -> TrainingSpec:
        """Load `<job_dir>/spec.json`."""
        return cls.model_validate_json((Path(job_dir) / SPEC).read_text(encoding="utf-8"))
