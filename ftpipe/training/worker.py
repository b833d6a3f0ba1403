"""One training job in a process of its own: `python -m ftpipe.training.worker <job_dir>`.

A crash or OOM here never reaches the server; every way out of this module (success, failure,
cancel, pause) ends in a final status.json, so no job stays "running" while its worker is alive.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from ftpipe.training import protocol
from ftpipe.training.callback import PROGRESS_FILE, Counter, make_callback
from ftpipe.training.data import Tokenised
from ftpipe.training.hyperparameters import Plan
from ftpipe.training.reporter import Reporter
from ftpipe.training.spec import TrainingSpec

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
MAX_METRIC_EVENTS = 200  # long jobs log every N steps so a job has at most ~200 metrics events
TRAINER_SCRATCH = ".trainer"


class JobFailure(Exception):
    """A failure with OpenAI's error fields, shown to the user as is."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ftpipe.training.worker <job_dir>", file=sys.stderr)
        return 2
    stop = StopFlag(Path(args[0]))
    signal.signal(signal.SIGTERM, lambda *_: stop.cancel())  # the server may also just signal
    return run(Path(args[0]), stop)


def run(job_dir: Path, stop: StopFlag | None = None) -> int:
    """Train the job in `job_dir` and leave a final status.json; 0 unless the job failed."""
    stop = stop or StopFlag(job_dir)
    reporter = Reporter(job_dir)
    try:
        spec = TrainingSpec.read(job_dir)
    except Exception as error:
        reporter.finish("failed", protocol.error_object("invalid_spec", f"spec.json: {error}"))
        return 1
    _prepare_environment(spec)
    reporter.update(force=True, state="running")
    try:
        outcome = train(spec, Path(job_dir), reporter, stop)
    except JobFailure as failure:
        return _failed(reporter, failure.code, failure.message, failure.param)
    except MemoryError:
        return _failed(reporter, "out_of_memory", "training ran out of memory")
    except OSError as error:
        if error.errno == errno.ENOSPC:
            return _failed(reporter, "no_disk_space", f"no space left on the disk: {error}")
        return _failed(reporter, "training_failed", f"{type(error).__name__}: {error}")
    except Exception as error:
        if type(error).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
            return _failed(reporter, "out_of_memory", f"the GPU ran out of memory: {error}")
        if "can't allocate memory" in str(error):  # torch's CPU allocator
            return _failed(reporter, "out_of_memory", f"training ran out of memory: {error}")
        return _failed(reporter, "training_failed", f"{type(error).__name__}: {error}")
    (Path(job_dir) / protocol.CONTROL).unlink(missing_ok=True)  # the request was carried out
    reporter.finish(**outcome)
    return 0


def _failed(reporter: Reporter, code: str, message: str, param: str | None = None) -> int:
    reporter.message(f"Fine-tuning job failed: {message}", level="error")
    reporter.finish("failed", protocol.error_object(code, message, param))
    return 1


def _prepare_environment(spec: TrainingSpec) -> None:
    """Offline unless allowed, one thread per worker unless configured (set before torch)."""
    if not spec.allow_downloads:
        for name in OFFLINE_ENV:
            os.environ[name] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", str(spec.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class StopFlag:
    """Cancel / pause requests: control.json (read at every step) or SIGTERM (cancel)."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self.signalled: str | None = None

    def cancel(self) -> None:
        self.signalled = "cancel"

    def requested(self) -> str | None:
        return self.signalled or protocol.requested_action(self.job_dir)


def train(spec: TrainingSpec, job_dir: Path, reporter: Reporter, stop: StopFlag) -> dict[str, Any]:
    """Load, tokenise, train; returns the final status values (state and what goes with it)."""
    import torch

    from ftpipe.training.data import DataError, tokenise_file, training_template
    from ftpipe.training.hyperparameters import resolve_spec

    device = _device(spec.device, torch)
    if device == "cpu":
        torch.set_num_threads(spec.threads)
    if stop.requested() == "cancel":
        return {"state": "cancelled"}
    model_path = _base_model_path(spec, reporter)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.chat_template = training_template(tokenizer.chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        train_data = tokenise_file(
            spec.training_file, tokenizer, tokenizer.chat_template, spec.max_seq_length
        )
    except (DataError, OSError) as error:
        raise JobFailure("invalid_training_file", str(error), "training_file") from None
    valid_data = None
    if spec.validation_file:
        try:
            valid_data = tokenise_file(
                spec.validation_file, tokenizer, tokenizer.chat_template, spec.max_seq_length
            )
        except (DataError, OSError) as error:
            raise JobFailure("invalid_validation_file", str(error), "validation_file") from None
    _report_data(reporter, "training", train_data)
    if valid_data is not None:
        _report_data(reporter, "validation", valid_data)
    plan = resolve_spec(spec, len(train_data.rows))
    reporter.update(force=True, total_steps=plan.total_steps, plan=plan.to_dict(), device=device)
    if device == "cuda":
        _check_gpu_memory(model_path, spec, plan.micro_batch_size, torch)

    trainer, counter = _build_trainer(
        spec,
        plan,
        model_path,
        tokenizer,
        train_data,
        valid_data,
        device,
        job_dir,
        reporter,
        stop,
        torch,
    )
    resume = str(spec.resume_from) if spec.resume_from else None
    if resume and not (Path(resume) / "trainer_state.json").is_file():
        raise JobFailure("invalid_checkpoint", f"{resume} is not a checkpoint of a paused job")
    if resume:
        progress = _read_progress(Path(resume))
        counter.trained_tokens = progress.get("trained_tokens", 0)
    reporter.message(
        "Fine-tuning job started" if not resume else f"Fine-tuning job resumed from {resume}",
        **plan.to_dict(),
    )
    trainer.train(resume_from_checkpoint=resume)
    outcome = counter.outcome
    status: dict[str, Any] = {
        "state": outcome,
        "trained_tokens": counter.trained_tokens,
        "step": trainer.state.global_step,
    }
    if outcome == "succeeded":
        _save_final(trainer, _output_dir(spec, job_dir) / protocol.MODEL_DIR)
        status["model"] = protocol.MODEL_DIR
        reporter.message(f"Training finished: {trainer.state.global_step} steps")
    elif outcome == "paused":
        status["checkpoint"] = counter.last_checkpoint
        reporter.message(f"Fine-tuning job paused at step {trainer.state.global_step}")
    else:
        reporter.message(f"Fine-tuning job cancelled at step {trainer.state.global_step}")
    shutil.rmtree(_output_dir(spec, job_dir) / TRAINER_SCRATCH, ignore_errors=True)
    return status


def _device(requested: str, torch: Any) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise JobFailure("invalid_device", "device 'cuda' was asked for but no GPU is available")
    return requested


def _base_model_path(spec: TrainingSpec, reporter: Reporter) -> Path:
    from ftpipe.training.base_models import BaseModelError, is_model_folder, resolve_base_model

    if spec.base_model_path is not None:
        if not is_model_folder(spec.base_model_path):
            raise JobFailure(
                "invalid_base_model", f"{spec.base_model_path} is not a model folder", "model"
            )
        return spec.base_model_path
    try:
        return resolve_base_model(spec.base_model, spec.models_dir, progress=reporter.message)
    except BaseModelError as error:
        raise JobFailure("invalid_base_model", str(error), "model") from None


def _report_data(reporter: Reporter, name: str, data: Any) -> None:
    if data.skipped:
        lines = ", ".join(str(n) for n in data.skipped[:10])
        reporter.message(
            f"{len(data.skipped)} {name} examples have no assistant token to train on and are "
            f"skipped (lines {lines})",
            level="warn",
        )
    if data.truncated:
        reporter.message(f"{data.truncated} {name} examples were truncated", level="warn")


def _check_gpu_memory(model_path: Path, spec: TrainingSpec, micro_batch: int, torch: Any) -> None:
    """Refuse a job that clearly cannot fit: weights + optimizer + a rough activation budget."""
    config = json.loads((model_path / "config.json").read_text())
    weights = sum(f.stat().st_size for f in model_path.glob("*.safetensors"))
    stored = 4 if str(config.get("torch_dtype", config.get("dtype"))) == "float32" else 2
    params = weights / stored
    trainable = params if spec.method == "full" else params * 0.02
    hidden = config.get("hidden_size", 2048)
    layers = config.get("num_hidden_layers", 24)
    activations = micro_batch * spec.max_seq_length * hidden * layers * 2 * 16
    needed = params * 2 + trainable * 16 + activations
    free, _total = torch.cuda.mem_get_info()
    if needed > free:
        raise JobFailure(
            "out_of_memory",
            f"the model needs about {needed / 2**30:.1f} GiB of GPU memory and "
            f"{free / 2**30:.1f} GiB are free: use LoRA, a smaller batch or max_seq_length",
        )


def _output_dir(spec: TrainingSpec, job_dir: Path) -> Path:
    return Path(spec.output_dir) if spec.output_dir else job_dir


def _save_final(trainer: Any, target: Path) -> None:
    """Adapter (or full model) plus tokenizer into model/, renamed into place whole."""
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    trainer.save_model(str(temporary))
    trainer.processing_class.save_pretrained(str(temporary))
    if target.exists():
        shutil.rmtree(target)
    os.replace(temporary, target)


def _read_progress(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / PROGRESS_FILE).read_text())
    except FileNotFoundError:
        return {}


def _build_trainer(
    spec: TrainingSpec,
    plan: Plan,
    model_path: Path,
    tokenizer: Any,
    train_data: Tokenised,
    valid_data: Tokenised | None,
    device: str,
    job_dir: Path,
    reporter: Reporter,
    stop: StopFlag,
    torch: Any,
) -> tuple[Any, Counter]:
    """SFTTrainer on pre-tokenised data with CPU-safe settings and the reporting callback."""
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    disable_progress_bars()
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float32
    set_seed(spec.seed)  # before LoRA's random init: the same seed gives the same job
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    if spec.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=spec.lora_rank,
                lora_alpha=spec.lora_alpha,
                lora_dropout=spec.lora_dropout,
                target_modules=spec.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    output_dir = _output_dir(spec, job_dir)
    args = SFTConfig(
        output_dir=str(output_dir / TRAINER_SCRATCH),
        per_device_train_batch_size=plan.micro_batch_size,
        per_device_eval_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation,
        num_train_epochs=plan.n_epochs,
        learning_rate=plan.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        seed=spec.seed,
        logging_strategy="steps",
        logging_steps=max(1, -(-plan.total_steps // MAX_METRIC_EVENTS)),
        save_strategy="no",  # the callback asks for saves: epoch ends and pauses
        eval_strategy="no",  # the callback asks for evaluations: epoch ends (and eval_steps)
        report_to="none",
        use_cpu=device == "cpu",
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        max_length=spec.max_seq_length,
        packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        save_only_model=False,
    )
    callback, counter = make_callback(
        reporter=reporter,
        stop=stop,
        plan=plan,
        checkpoints_dir=output_dir / protocol.CHECKPOINTS_DIR,
        checkpoints_kept=spec.checkpoints_kept,
        has_validation=valid_data is not None,
        eval_steps=spec.eval_steps,
    )
    trainer_class = counting_trainer(SFTTrainer, counter)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_data.rows),
        eval_dataset=Dataset.from_list(valid_data.rows) if valid_data else None,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    return trainer, counter


def counting_trainer(base: type, counter: Any) -> type:
    """The SFTTrainer that also counts the tokens it really trains on (labels != -100)."""

    class CountingTrainer(base):  # type: ignore[misc, valid-type]
        def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            labels = inputs.get("labels")
            if labels is not None:
                counter.trained_tokens += int((labels[..., 1:] != -100).sum())
            return super().training_step(model, inputs, *args, **kwargs)

    return CountingTrainer


if __name__ == "__main__":
    sys.exit(main())
