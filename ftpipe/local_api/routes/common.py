"""Helpers the route modules share: strict JSON bodies, the store from the app, list envelopes,
limits."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.store import Page, Row, Store


def _no_constant(name: str) -> float:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"the number {text[:40]} is out of range", text, 0)
    return value


def strict_json(body: bytes) -> Any:
    """JSON as RFC 8259 has it: Python's NaN/Infinity extensions, numbers that overflow a double,
    over-deep nesting and over-long integers are parse errors (a 400), not values or crashes."""
    try:
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as error:  # ValueError: an int over 4300 digits
        raise json.JSONDecodeError(str(error).split(";")[0][:120], "", 0) from None


class StrictJsonRequest(Request):
    """A request whose JSON body goes through `strict_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """Routes that read JSON bodies strictly, so no NaN reaches a model or a stored object."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


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
