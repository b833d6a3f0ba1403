"""`/v1/models`: on the real engine its local base models and the real fine-tuned models and
checkpoints; on the stand-in engine the catalogue's names and the stand-in's fine-tuned models,
each announced as a stand-in (`owned_by`) so nobody mistakes one for a real model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from ftpipe import catalog
from ftpipe.local_api import inference
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.local_models import (
    STAND_IN_OWNER,
    base_body,
    base_ids,
    is_real_row,
    model_not_found,
    other_engine,
    real_engine_enabled,
)
from ftpipe.local_api.routes.common import StrictJsonRoute, store_of
from ftpipe.local_api.store import Row

__all__ = ["model_not_found", "router"]

router = APIRouter(route_class=StrictJsonRoute)


def _stand_in(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "owned_by": STAND_IN_OWNER}


def _catalog_body(info: catalog.ModelInfo) -> dict[str, Any]:
    return _stand_in({"id": info.id, "object": "model", "created": info.created})


def _real(request: Request) -> bool:
    return real_engine_enabled(request.app.state.local)


def _served(row: Row, real: bool) -> dict[str, Any]:
    """A fine-tuned model's object; the stand-in engine marks its own as stand-ins."""
    return row.body if real else _stand_in(row.body)


def _base_models(request: Request, real: bool) -> list[dict[str, Any]]:
    if real:
        local, store = request.app.state.local, store_of(request)
        return [base_body(model, local, store) for model in base_ids(local, store)]
    return [_catalog_body(info) for info in catalog.all_models()]


def _is_base(request: Request, model: str, real: bool) -> bool:
    if real:
        return model in base_ids(request.app.state.local, store_of(request))
    return catalog.openai_model(model) is not None and not model.startswith("ft:")


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    real = _real(request)
    with store_of(request).reader() as tx:
        rows = tx.all("model", newest_first=False)
    tuned = [_served(row, real) for row in rows if is_real_row(row) == real]
    return {"object": "list", "data": _base_models(request, real) + tuned}


@router.get("/models/{model:path}")
def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    real = _real(request)
    with store_of(request).reader() as tx:
        row = tx.get("model", model)
    if row is not None:
        if is_real_row(row) != real:
            raise other_engine(model, real=real)
        return _served(row, real)
    if real and _is_base(request, model, real):
        local = request.app.state.local
        return base_body(model, local, store_of(request))
    if not real and _is_base(request, model, real):
        info = catalog.openai_model(model)
        assert info is not None
        return _catalog_body(info)
    raise model_not_found(model)


@router.delete("/models/{model:path}")
def delete_model(model: str, request: Request) -> dict[str, Any]:
    with store_of(request).transaction() as tx:
        row = tx.get("model", model)
        if row is not None:
            tx.delete(model)
    if row is not None:
        if is_real_row(row):
            adapter = row.internal.get("adapter_path")
            base = row.internal.get("base_path")
            inference.unload(
                request.app, Path(base) if base else None, Path(adapter) if adapter else None
            )
        return {"id": model, "object": "model", "deleted": True}
    if _is_base(request, model, _real(request)):
        raise ApiError(
            403,
            f"You are not allowed to delete the base model '{model}'; only fine-tuned models "
            "can be deleted.",
            param="model",
            code="model_not_deletable",
        )
    raise model_not_found(model)
