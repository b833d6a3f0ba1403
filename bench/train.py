"""Benchmark of ftpipe's training worker against a plain TRL script, in one run.

Usage: python bench/train.py [--steps 10] [--model smollm2-135m-instruct|FOLDER|ORG/NAME]
       [--device auto|cpu|cuda] [--threads 1] [--batch-size 4] [--workdir DIR]

The sample data (data/samples/csv) is prepared to chat JSONL with `ftpipe.prepare` for the
model (counted with its own tokenizer), then two programs train on it, each in its own child
process so that wall time and peak RSS (os.wait4) belong to that program alone:

* ftpipe - `ftpipe.training.worker` on a job folder (spec.json), LoRA, as the local server runs
           it: pre-tokenised assistant-only labels, events, metrics CSV, checkpoints, the adapter;
* plain  - SFTTrainer on the same messages with assistant_only_loss, the same LoRA settings,
           learning rate, batch, epochs (so the same steps), threads and CPU-safe options.

tokens/s is trained (labelled) tokens over the child's whole wall time (imports and model load
included, as a user waits for them). The last line reads
`train: tokens_per_s=... vs_plain_trl=<ftpipe time / plain time> peak_rss_mb=...`; the target
vs_plain_trl < 1.15 is printed with PASS/MISS and a miss never fails the process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples" / "csv"
TARGET = 1.15
BENCH_ID = "bench-base"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="Optimizer steps (at least).")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="Base model id/folder.")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each trainer.")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, config = args.child
        (run_ftpipe if kind == "ftpipe" else run_plain)(json.loads(Path(config).read_text()))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ftpipe-bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = setup(args, workdir)
    print(
        f"model {args.model} ({config['model_path']}), {config['examples']} examples, "
        f"batch {args.batch_size}, {config['n_epochs']} epochs = {config['steps']} steps, "
        f"device {args.device}, {args.threads} thread(s)"
    )
    results = {kind: child(kind, config, workdir) for kind in ("ftpipe", "plain")}
    for kind, result in results.items():
        print(
            f"{kind:7} wall {result['wall_s']:7.1f} s  train {result['train_s']:7.1f} s  "
            f"steps {result['steps']}  trained tokens {result['trained_tokens']}  "
            f"tokens/s {result['tokens_per_s']:8.1f}  peak RSS {result['peak_rss_mb']:7.0f} MB"
        )
    ours, plain = results["ftpipe"], results["plain"]
    ratio = ours["wall_s"] / plain["wall_s"]
    verdict = "PASS" if ratio < TARGET else "MISS"
    print(f"target vs_plain_trl < {TARGET}: {verdict} ({ratio:.3f})")
    print(
        f"train: tokens_per_s={ours['tokens_per_s']:.1f} vs_plain_trl={ratio:.3f} "
        f"peak_rss_mb={ours['peak_rss_mb']:.0f}"
    )


def setup(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Resolve the base model (converting the embedded one once), prepare the sample data."""
    from ftpipe.local_engine import models_dir
    from ftpipe.settings import get_settings
    from ftpipe.training.base_models import resolve_base_model

    folder = resolve_base_model(args.model, models_dir(get_settings()), progress=print)
    os.environ["FTPIPE_LOCAL_BASE_MODELS"] = json.dumps({BENCH_ID: str(folder)})
    from ftpipe.prepare.options import PrepareOptions
    from ftpipe.prepare.pipeline import prepare
    from ftpipe.training.hyperparameters import resolve

    prepared = prepare(
        [SAMPLES], PrepareOptions(model=BENCH_ID, validation_share=0.0), out_root=workdir / "data"
    )
    examples = sum(1 for line in prepared.train_path.read_text().splitlines() if line.strip())
    per_epoch = math.ceil(examples / args.batch_size)
    n_epochs = max(1, math.ceil(args.steps / per_epoch))
    plan = resolve(examples=examples, n_epochs=n_epochs, batch_size=args.batch_size)
    return {
        "model_path": str(folder),
        "training_file": str(prepared.train_path),
        "examples": examples,
        "n_epochs": n_epochs,
        "batch_size": args.batch_size,
        "micro_batch_size": plan.micro_batch_size,
        "gradient_accumulation": plan.gradient_accumulation,
        "learning_rate": plan.learning_rate,
        "steps": plan.total_steps,
        "device": args.device,
        "threads": args.threads,
    }


def child(kind: str, config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one trainer in its own process; wall time and peak RSS from os.wait4."""
    run_dir = workdir / kind
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.json"
    path.write_text(json.dumps({**config, "run_dir": str(run_dir)}))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(config["threads"]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(path)], env=env, cwd=ROOT
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} run failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads((run_dir / "result.json").read_text())
    return {
        **result,
        "wall_s": wall,
        "tokens_per_s": result["trained_tokens"] / wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def run_ftpipe(config: dict[str, Any]) -> None:
    """ftpipe's worker on a job folder, exactly as the local server starts it."""
    from ftpipe.training import protocol
    from ftpipe.training.spec import TrainingSpec
    from ftpipe.training.worker import run

    job_dir = Path(config["run_dir"]) / "job"
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = TrainingSpec(
        job_id="ftjob-bench",
        base_model=BENCH_ID,
        base_model_path=Path(config["model_path"]),
        training_file=Path(config["training_file"]),
        n_epochs=config["n_epochs"],
        batch_size=config["batch_size"],
        threads=config["threads"],
        device=config["device"],
    )
    (job_dir / protocol.SPEC).write_text(spec.to_json())
    started = time.perf_counter()
    code = run(job_dir)
    elapsed = time.perf_counter() - started
    status = json.loads((job_dir / protocol.STATUS).read_text())
    if code != 0 or status.get("state") != "succeeded":
        raise SystemExit(f"ftpipe worker: {status.get('state')} {status.get('error')}")
    _write_result(config, elapsed, status.get("step", 0), status.get("trained_tokens", 0))


def run_plain(config: dict[str, Any]) -> None:
    """A plain TRL script: conversational data, assistant-only loss, the same LoRA settings."""
    import torch
    from datasets import Dataset, disable_progress_bars
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from ftpipe.training.spec import (
        DEFAULT_LORA_ALPHA,
        DEFAULT_LORA_DROPOUT,
        DEFAULT_LORA_RANK,
        DEFAULT_MAX_SEQ_LENGTH,
    )
    from ftpipe.training.templates import CHATML_WITH_GENERATION

    disable_progress_bars()
    started = time.perf_counter()
    cuda = config["device"] == "cuda" or (config["device"] == "auto" and torch.cuda.is_available())
    if not cuda:
        torch.set_num_threads(config["threads"])
    bf16 = cuda and torch.cuda.is_bf16_supported()
    tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
    tokenizer.chat_template = CHATML_WITH_GENERATION  # the models benchmarked speak ChatML
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = []
    for line in Path(config["training_file"]).read_text().splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            rows.append(
                {"messages": [{k: v for k, v in m.items() if k != "weight"} for m in messages]}
            )
    set_seed(42)
    model = AutoModelForCausalLM.from_pretrained(
        config["model_path"], dtype=torch.bfloat16 if bf16 else torch.float32
    )
    args = SFTConfig(
        output_dir=str(Path(config["run_dir"]) / "scratch"),
        per_device_train_batch_size=config["micro_batch_size"],
        gradient_accumulation_steps=config["gradient_accumulation"],
        num_train_epochs=config["n_epochs"],
        learning_rate=config["learning_rate"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        seed=42,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        max_length=DEFAULT_MAX_SEQ_LENGTH,
        packing=False,
        assistant_only_loss=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=DEFAULT_LORA_RANK,
            lora_alpha=DEFAULT_LORA_ALPHA,
            lora_dropout=DEFAULT_LORA_DROPOUT,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    dataset = trainer.train_dataset
    names = [n for n in ("assistant_masks", "completion_mask") if n in dataset.column_names]
    masks = dataset[names[0]] if names else []
    per_epoch = sum(sum(mask[1:]) for mask in masks)  # the first token is never predicted
    trainer.train()
    trainer.save_model(str(Path(config["run_dir"]) / "model"))
    elapsed = time.perf_counter() - started
    _write_result(config, elapsed, trainer.state.global_step, per_epoch * config["n_epochs"])


def _write_result(config: dict[str, Any], train_s: float, steps: int, tokens: int) -> None:
    result = {"train_s": train_s, "steps": steps, "trained_tokens": tokens}
    (Path(config["run_dir"]) / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
