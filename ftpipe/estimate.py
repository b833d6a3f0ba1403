"""Fine-tuning cost rules from OpenAI's data-prep guide: default epochs, billed tokens, price.

The local server sizes its jobs with the same rules the dataset report uses to estimate cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ftpipe import catalog

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_DEFAULT_EPOCHS = 25


def default_epochs(examples: int) -> int:
    """3 epochs, moved so that examples x epochs stays within 100..25,000."""
    epochs = TARGET_EPOCHS
    if examples * epochs < MIN_TARGET_EXAMPLES:
        epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // max(1, examples))
    elif examples * epochs > MAX_TARGET_EXAMPLES:
        epochs = max(1, MAX_TARGET_EXAMPLES // examples)
    return epochs


def billed_tokens_per_epoch(token_counts: Iterable[int] | np.ndarray, limit: int | None) -> int:
    """Each example counts up to the model's per-example limit; longer ones are truncated."""
    counts = (
        token_counts
        if isinstance(token_counts, np.ndarray)
        else np.fromiter(token_counts, np.int64)
    )
    return int((np.minimum(counts, limit) if limit else counts).sum())


@dataclass(frozen=True)
class CostEstimate:
    """What a training run on a dataset would bill, by the guide's rule and the price table."""

    model: str
    examples: int
    epochs: int
    tokens_per_epoch: int
    billed_tokens: int
    price_per_1m: float | None
    usd: float | None


def cost_for(
    examples: int, tokens_per_epoch: int, model: str, epochs: int | None = None
) -> CostEstimate:
    """Billed tokens and price for `examples` whose billed tokens add up to `tokens_per_epoch`."""
    info = catalog.lookup(model)
    chosen = epochs or default_epochs(examples)
    price = info.training_price_per_1m if info else None
    billed = tokens_per_epoch * chosen
    return CostEstimate(
        model=info.snapshot if info else model,
        examples=examples,
        epochs=chosen,
        tokens_per_epoch=tokens_per_epoch,
        billed_tokens=billed,
        price_per_1m=price,
        usd=round(billed / 1_000_000 * price, 4) if price is not None else None,
    )


def estimate_cost(
    token_counts: Iterable[int], model: str, epochs: int | None = None
) -> CostEstimate:
    """Billed tokens and price for training `model` on examples of the given token counts."""
    counts = list(token_counts)
    info = catalog.lookup(model)
    limit = info.training_token_limit if info else None
    return cost_for(len(counts), billed_tokens_per_epoch(counts, limit), model, epochs)
