"""Validate server answers against the schemas of OpenAI's official OpenAPI spec."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# OpenAI's official spec (MIT, licence beside it), vendored so checks run anywhere.
SPEC = Path(__file__).resolve().parents[1] / "reference" / "openai-openapi.yaml"
SPEC_URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    """OpenAPI's `nullable: true` becomes JSON Schema's `type: [..., "null"]`."""
    if isinstance(node, dict):
        node = {key: _nullable(value) for key, value in node.items()}
        if node.pop("nullable", False) is True:
            kind = node.get("type")
            if isinstance(kind, str):
                node["type"] = [kind, "null"]
                if "enum" in node:
                    node["enum"] = [*node["enum"], None]
            elif kind is None and node:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    return node


@cache
def _registry() -> Registry:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = _nullable(yaml.load(SPEC.read_text(encoding="utf-8"), Loader=loader))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def spec_available() -> bool:
    return SPEC.exists()


def validate(schema_name: str, instance: Any) -> None:
    """Raise jsonschema's ValidationError when `instance` breaks the named schema."""
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    Draft202012Validator(schema, registry=_registry()).validate(instance)


def parsed(schema_name: str, raw: Any) -> Any:
    """Validate a raw SDK response's JSON against the spec schema, then parse it strictly."""
    validate(schema_name, raw.http_response.json())
    return raw.parse()


def parsed_list(schema_name: str, raw: Any) -> Any:
    """Like `parsed` for lists whose spec types first_id/last_id as strings: an empty page has
    no first or last id, and the server sends null there (as the checkpoint list allows)."""
    body = raw.http_response.json()
    if not body["data"] and body.get("first_id") is None and body.get("last_id") is None:
        body = {**body, "first_id": "", "last_id": ""}
    validate(schema_name, body)
    return raw.parse()


def error_of(excinfo: Any) -> dict[str, Any]:
    """The error envelope of a failed SDK call, checked against the spec's ErrorResponse."""
    body = excinfo.value.response.json()
    validate("ErrorResponse", body)
    return body["error"]
