"""Pairwise LLM-as-judge: each pair asked twice with the answers' positions swapped, so a judge's
preference for the first (or second) answer cancels out instead of deciding the result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from ftpipe.errors import InputError
from ftpipe.eval.examples import EvalExample, Message, text_of
from ftpipe.eval.result import JudgeResult, Score
from ftpipe.eval.stats import bootstrap, mean_of

Choice = Literal["A", "B", "TIE"]
Outcome = Literal["win", "tie", "loss", "unparsed"]
AskJudge = Callable[[list[Message]], str]

INSTRUCTION = (
    "You compare two candidate answers to the last user message of a conversation. A reference "
    "answer shows what a good answer looks like. Prefer the candidate that is correct and "
    "closest in meaning to the reference; ignore length and style otherwise. Reply with exactly "
    "one word: A, B or TIE."
)
OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def judge_messages(example: EvalExample, first: str, second: str) -> list[Message]:
    """The judge's request: the conversation, the reference and the two candidates."""
    conversation = "\n".join(
        f"{m.get('role')}: {text_of(m.get('content'))}" for m in example.prompt
    )
    body = (
        f"Conversation:\n{conversation}\n\nReference answer:\n{example.reference}\n\n"
        f"Answer A:\n{first}\n\nAnswer B:\n{second}\n\nWhich answer is better? Reply A, B or TIE."
    )
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": body}]


def parse_choice(reply: str) -> Choice | None:
    """The judge's one word ('A.', '**B**' and 'tie' too); None when it said something else."""
    words = reply.strip().upper().replace("*", " ").replace(".", " ").split()
    first = words[0] if words else ""
    return first if first in ("A", "B", "TIE") else None  # type: ignore[return-value]


def combine(tuned_first: Choice | None, base_first: Choice | None) -> Outcome:
    """Both orders together: tuned wins only if it gets more votes than base across the two."""
    if tuned_first is None or base_first is None:
        return "unparsed"
    tuned = (tuned_first == "A") + (base_first == "B")
    base = (tuned_first == "B") + (base_first == "A")
    return "win" if tuned > base else "loss" if base > tuned else "tie"


def judge_pairs(
    ask_judge: AskJudge,
    judge: str,
    examples: Sequence[EvalExample],
    tuned: Sequence[str],
    base: Sequence[str],
    *,
    concurrency: int = 8,
) -> tuple[JudgeResult, list[Outcome]]:
    """Judge every example; an error from the judge's endpoint propagates (the caller names it)."""

    def one(index: int) -> Outcome:
        example = examples[index]
        first = parse_choice(ask_judge(judge_messages(example, tuned[index], base[index])))
        second = parse_choice(ask_judge(judge_messages(example, base[index], tuned[index])))
        return combine(first, second)

    with ThreadPoolExecutor(
        max_workers=max(1, concurrency), thread_name_prefix="ftpipe-judge"
    ) as pool:
        outcomes: list[Outcome] = list(pool.map(one, range(len(examples))))
    return summarise(judge, outcomes), outcomes


def summarise(judge: str, outcomes: Sequence[Outcome]) -> JudgeResult:
    """Counts and the win rate (ties count half) with a bootstrap interval."""
    values = [OUTCOME_SCORE[o] for o in outcomes if o != "unparsed"]
    if not values:
        raise InputError(
            f"judge {judge}", "did not answer A, B or TIE to any comparison; pick another judge"
        )
    low_high = bootstrap(mean_of(values), len(values))
    return JudgeResult(
        judge=judge,
        wins=outcomes.count("win"),
        ties=outcomes.count("tie"),
        losses=outcomes.count("loss"),
        unparsed=outcomes.count("unparsed"),
        win_rate=Score(
            value=sum(values) / len(values),
            count=len(values),
            low=low_high.low,
            high=low_high.high,
            interval="bootstrap",
            source=f"judge {judge}",
        ),
    )
