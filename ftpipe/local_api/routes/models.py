"""`/v1/models`: the catalogue's base models plus the fine-tuned models jobs have produced."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ftpipe import catalog
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.routes.common import store_of

router = APIRouter()


def _base(info: catalog.ModelInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "model", "created": info.created, "owned_by": info.owned_by}


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    with store_of(request).reader() as tx:
        tuned = [row.body for row in tx.all("model", newest_first=False)]
    return {"object": "list", "data": [_base(info) for info in catalog.all_models()] + tuned}


@router.get("/models/{model:path}")
def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    with store_of(request).reader() as tx:
        row = tx.get("model", model)
    if row is not None:
        return row.body
    info = catalog.lookup(model)
    if info is None or model.startswith("ft:"):
        raise model_not_found(model)
    return _base(info)


@router.delete("/models/{model:path}")
def delete_model(model: str, request: Request) -> dict[str, Any]:
    with store_of(request).transaction() as tx:
        row = tx.get("model", model)
        if row is not None:
            tx.delete(model)
            return {"id": model, "object": "model", "deleted": True}
    if catalog.lookup(model) is not None and not model.startswith("ft:"):
        raise ApiError(
            403,
            f"You are not allowed to delete the base model '{model}'; only fine-tuned models "
            "can be deleted.",
            param="model",
            code="model_not_deletable",
        )
    raise model_not_found(model)
