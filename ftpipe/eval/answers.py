"""Put every held-out question to a model: temperature 0, bounded concurrency, ftpipe's retries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

import openai

from ftpipe.chat import ask
from ftpipe.eval.examples import EvalExample

OnAnswer = Callable[[str], None]  # called with the model's name after each answer


def reply_budget(reference: str) -> int:
    """Room for about twice the trained reply (4 characters a token), so a rambling model is
    cut short instead of making the evaluation slow, and a right answer always fits."""
    return max(32, len(reference) // 2 + 32)


def answer_all(
    client: openai.OpenAI,
    model: str,
    examples: Sequence[EvalExample],
    *,
    concurrency: int = 8,
    attempts: int = 3,
    on_answer: OnAnswer | None = None,
) -> list[str]:
    """The model's reply to each example, in order; the first request that still fails after
    its retries stops the whole run (a partial set of answers is not a result)."""
    if not examples:
        return []

    def one(example: EvalExample) -> str:
        reply = ask(
            client,
            example.prompt,
            model=model,
            temperature=0,
            max_tokens=reply_budget(example.reference),
            attempts=attempts,
        )
        if on_answer is not None:
            on_answer(model)
        return reply.text

    first = one(examples[0])  # a model the endpoint refuses fails once, not once per worker
    with ThreadPoolExecutor(
        max_workers=max(1, concurrency), thread_name_prefix="ftpipe-eval"
    ) as pool:
        futures = [pool.submit(one, example) for example in examples[1:]]
        _raise_first_error(futures)
        return [first, *(future.result() for future in futures)]


def _raise_first_error(futures: list[Future[str]]) -> None:
    """Wait for all; on the first failure cancel what has not started and raise it."""
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((f for f in done if f.exception() is not None), None)
    if failed is not None:
        for future in pending:
            future.cancel()
        raise failed.exception()  # type: ignore[misc]
