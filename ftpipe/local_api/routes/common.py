"""Helpers the route modules share: the store from the app, list envelopes, limits."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.store import Page, Row, Store


def store_of(request: Request) -> Store:
    return request.app.state.store


def list_body(page: Page, *, with_ids: bool = False) -> dict[str, Any]:
    """OpenAI's list envelope; cursor lists also name their first and last ids."""
    body: dict[str, Any] = {
        "object": "list",
        "data": [row.body for row in page.rows],
        "has_more": page.has_more,
    }
    if with_ids:
        body["first_id"] = page.rows[0].id if page.rows else None
        body["last_id"] = page.rows[-1].id if page.rows else None
    return body


def check_limit(limit: int, *, maximum: int = 100, param: str = "limit") -> int:
    if not 1 <= limit <= maximum:
        raise ApiError(
            400,
            f"Invalid '{param}': {limit}. It must be between 1 and {maximum}.",
            param=param,
            code="integer_out_of_range",
        )
    return limit


def ordered(rows: list[Row], order: str) -> list[Row]:
    """Rows come newest first from the store; `asc` flips them."""
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid 'order': {order!r}; use 'asc' or 'desc'.", param="order")
    return list(reversed(rows)) if order == "asc" else rows
