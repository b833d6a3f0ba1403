"""Fine-tune end to end with nothing but the official `openai` SDK.

Run it against any OpenAI-compatible endpoint, e.g. a server started with `ftpipe local-api`:
`OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=local python -m ftpipe.walkthrough FILE`.
It imports nothing from ftpipe, so it shows exactly what any SDK user can do.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from openai import OpenAI

TERMINAL = ("succeeded", "failed", "cancelled")


def first_exchange(path: Path) -> tuple[str, str]:
    """The first user prompt of the training file and the reply it was trained on."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                messages = json.loads(line)["messages"]
                prompt = next(m["content"] for m in messages if m["role"] == "user")
                reply = next(m["content"] for m in messages if m["role"] == "assistant")
                return prompt, reply
    raise ValueError(f"{path} holds no example")


def run(
    client: OpenAI,
    training_path: Path,
    model: str = "gpt-4o-mini",
    echo: Callable[[str], None] = print,
    poll_seconds: float = 1.0,
) -> str:
    """Upload, launch, wait, read events and checkpoints, then ask the new model; returns it."""
    with training_path.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    echo(f"uploaded {training_path} as {uploaded.id} ({uploaded.bytes} bytes)")
    job = client.fine_tuning.jobs.create(
        model=model, training_file=uploaded.id, suffix="walkthrough"
    )
    echo(f"created job {job.id} ({job.status})")
    while job.status not in TERMINAL:
        time.sleep(poll_seconds)
        job = client.fine_tuning.jobs.retrieve(job.id)
        echo(f"job {job.id} is {job.status}")
    if job.status != "succeeded" or job.fine_tuned_model is None:
        reason = job.error.message if job.error else job.status
        raise RuntimeError(f"job {job.id} ended {job.status}: {reason}")
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [event for event in events if event.type == "metrics"]
    echo(f"{len(events)} events, {len(metrics)} with step metrics; newest: {events[0].message}")
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(job.id):
        echo(
            f"checkpoint {checkpoint.fine_tuned_model_checkpoint} "
            f"train_loss={checkpoint.metrics.train_loss}"
        )
    prompt, trained = first_exchange(training_path)
    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": prompt}]
    )
    reply = answer.choices[0].message.content
    echo(f"fine-tuned model {job.fine_tuned_model}")
    echo(f"asked {prompt!r}; it replied {reply!r} (trained reply: {trained!r})")
    return job.fine_tuned_model


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m ftpipe.walkthrough TRAINING_FILE.jsonl [MODEL]", file=sys.stderr)
        return 2
    run(OpenAI(), Path(args[0]), *args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
