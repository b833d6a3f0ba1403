"""OpenAI's error envelope for the local server: `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
    500: "server_error",
}


BAD_JSON = (
    "We could not parse the JSON body of your request. The API expects a JSON payload, "
    "but what was sent was not valid JSON."
)
NOT_AN_OBJECT = "The request body must be a JSON object."
SOURCES = ("body", "query", "path", "header", "cookie")
MAX_SERVER_DETAIL = 200

# What pydantic's type errors expected, in the words of OpenAI's "Invalid type" messages.
EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "typed_dict_type": "an object",
}
BOUNDS = {
    "greater_than": ("below minimum value", ">", "gt", "below_min_value"),
    "greater_than_equal": ("below minimum value", ">=", "ge", "below_min_value"),
    "less_than": ("above maximum value", "<", "lt", "above_max_value"),
    "less_than_equal": ("above maximum value", "<=", "le", "above_max_value"),
}


class ApiError(Exception):
    """An error the server answers in OpenAI's shape; raise it from any route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def not_found(kind: str, object_id: str, param: str) -> ApiError:
    """The 404 OpenAI sends for an unknown id."""
    return ApiError(404, f"No such {kind}: '{object_id}'", param=param, code=None)


def json_kind(value: Any) -> str:
    """A JSON value's type as OpenAI's messages name it ('a string', 'null', ...)."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number")):
        if isinstance(value, kind):
            return name
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list | tuple) else "an object"


def quoted(values: Iterable[object]) -> str:
    """`'a', 'b', and 'c'`: the list of allowed values in OpenAI's messages."""
    items = [f"'{value}'" for value in values]
    if len(items) < 3:
        return " and ".join(items)
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    """A 400 for a value of the wrong JSON type."""
    message = (
        f"Invalid type for '{param}': expected {expected}, but got {json_kind(value)} instead."
    )
    return ApiError(400, message, param=param, code="invalid_type")


def invalid_value(param: str, value: Any, allowed: Sequence[object]) -> ApiError:
    """A 400 for a value outside an enum, listing what is allowed."""
    message = f"Invalid value: '{value}'. Supported values are: {quoted(allowed)}."
    return ApiError(400, message, param=param, code="invalid_value")


def missing_parameter(param: str) -> ApiError:
    """A 400 for a required parameter that was not sent (or was sent as null)."""
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def error_body(status: int, message: str, param: str | None, code: str | None) -> dict:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }


def error_response(error: ApiError) -> JSONResponse:
    body = error_body(error.status, error.message, error.param, error.code)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def server_error(error: BaseException) -> ApiError:
    """A 500 for a bug in the server: one short line, never a traceback (the log has that)."""
    lines = str(error).strip().splitlines()
    detail = f": {lines[0][:MAX_SERVER_DETAIL]}" if lines else ""
    message = f"The local server had an error ({type(error).__name__}{detail})."
    return ApiError(500, message, code="server_error")


async def handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


# --- request validation ----------------------------------------------------------------------


def _child(node: Any, part: Any) -> tuple[bool, Any]:
    """(True, the value) when `part` is a key of the object or an index of the array `node`."""
    if isinstance(node, Mapping) and isinstance(part, str) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def _walk(location: Sequence[Any], body: Any, missing: bool) -> list[str | int]:
    """The path of an error inside the sent body: union and discriminator tags that pydantic
    puts in `loc` (`str`, `constrained-int`, a tag value) are not keys of the body, so skipped."""
    path: list[str | int] = []
    node = body
    for index, part in enumerate(location):
        found, child = _child(node, part)
        absent_field = missing and index == len(location) - 1 and isinstance(node, Mapping)
        if found or absent_field:
            node = child
            path.append(part)
    return path


def _path(error: Mapping[str, Any], body: Any) -> list[str | int]:
    """The error's place in the request, without its source (`body`, `query`, ...)."""
    location = list(error.get("loc", ()))
    source = location.pop(0) if location and location[0] in SOURCES else None
    if source not in (None, "body"):
        return location
    path = _walk(location, body, error.get("type") == "missing")
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        path.append(str((error.get("ctx") or {}).get("discriminator", "type")).strip("'\""))
    return path


def dotted(path: Sequence[str | int]) -> str:
    """OpenAI's spelling of a parameter's place: `messages.[0].content`."""
    return ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in path)


def _bound_error(error: Mapping[str, Any], param: str) -> ApiError:
    words, sign, key, code = BOUNDS[error["type"]]
    value, limit = error.get("input"), (error.get("ctx") or {}).get(key)
    kind = "decimal" if isinstance(value, float) or isinstance(limit, float) else "integer"
    limit = f"{limit:g}" if isinstance(limit, float) else limit
    message = (
        f"Invalid '{param}': {kind} {words}. Expected a value {sign} {limit}, but got {value} "
        "instead."
    )
    return ApiError(400, message, param=param, code=f"{kind}_{code}")


def _length_error(error: Mapping[str, Any], param: str) -> ApiError:
    """OpenAI's wording for strings and arrays that are too short or too long."""
    value, ctx, kind = error.get("input"), error.get("ctx") or {}, error["type"]
    noun, article = ("string", "a") if kind.startswith("string") else ("array", "an")
    size = len(value) if isinstance(value, str | list | tuple | dict) else ctx.get("actual_length")
    if "short" in kind:
        limit, bound, words = ctx.get("min_length"), "minimum", "too short"
        code = "empty_array" if noun == "array" and size == 0 else f"{noun}_below_min_length"
    else:
        limit, bound, words = ctx.get("max_length"), "maximum", "too long"
        code = f"{noun}_above_max_length"
    if code == "empty_array":
        detail = "empty array. Expected an array with minimum length 1, but got an empty array"
    else:
        detail = (
            f"{noun} {words}. Expected {article} {noun} with {bound} length {limit}, but got "
            f"{article} {noun} with length {size}"
        )
    return ApiError(400, f"Invalid '{param}': {detail} instead.", param=param, code=code)


def _typed_error(group: Sequence[Mapping[str, Any]], param: str) -> ApiError:
    """Type and enum errors at one place (a union's members each add one) as one message."""
    value = group[0].get("input")
    literals = [error for error in group if error["type"] == "literal_error"]
    if literals and isinstance(value, str):
        expected = (literals[0].get("ctx") or {}).get("expected", "")
        message = f"Invalid value: '{value}'. Supported values are: {expected}."
        return ApiError(400, message, param=param, code="invalid_value")
    expected_kinds = []
    for error in group:
        kind = EXPECTED.get(error["type"])
        if error["type"] == "literal_error":
            kind = "one of " + str((error.get("ctx") or {}).get("expected", ""))
        if kind and kind not in expected_kinds:
            expected_kinds.append(kind)
    return invalid_type(param, " or ".join(expected_kinds), value)


def _constraint_error(error: Mapping[str, Any], param: str) -> ApiError:
    """A value of the right type that breaks a bound, a length, a pattern or a custom rule."""
    kind = error["type"]
    if kind in BOUNDS:
        return _bound_error(error, param)
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return _length_error(error, param)
    if kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern")
        message = (
            f"Invalid '{param}': string does not match pattern. Expected a string that matches "
            f"the pattern '{pattern}'."
        )
        return ApiError(400, message, param=param, code="invalid_value")
    code = kind if kind not in ("value_error", "assertion_error") else "invalid_value"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return ApiError(400, f"Invalid '{param}': {message}", param=param, code=code)


def _error_at(group: Sequence[Mapping[str, Any]], param: str) -> ApiError:
    """The one error to answer for the pydantic errors found at one place."""
    kinds = {error["type"] for error in group}
    if "missing" in kinds or "union_tag_not_found" in kinds:
        return missing_parameter(param)
    if "extra_forbidden" in kinds:
        message = f"Unrecognized request argument supplied: {param}"
        return ApiError(400, message, param=param, code="unknown_parameter")
    if "union_tag_invalid" in kinds:
        ctx = next(e for e in group if e["type"] == "union_tag_invalid").get("ctx") or {}
        message = (
            f"Invalid value: '{ctx.get('tag')}'. Supported values are: {ctx.get('expected_tags')}."
        )
        return ApiError(400, message, param=param, code="invalid_value")
    specific = [e for e in group if e["type"] not in EXPECTED and e["type"] != "literal_error"]
    return _constraint_error(specific[0], param) if specific else _typed_error(group, param)


def validation_error(errors: Sequence[Mapping[str, Any]], body: Any) -> ApiError:
    """One OpenAI-style 400 for pydantic's errors: the deepest place wins (where the input got
    furthest), and the errors at that place (one per union member) make one message."""
    located = [(error, _path(error, body)) for error in errors]
    deepest = max(len(path) for _, path in located)
    chosen = next(path for _, path in located if len(path) == deepest)
    if not chosen and not isinstance(body, Mapping):
        return ApiError(400, NOT_AN_OBJECT)
    return _error_at([error for error, path in located if path == chosen], dotted(chosen))


async def handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 details become one OpenAI-style 400 naming the bad parameter."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return error_response(ApiError(400, "The request is not valid."))
    if errors[0].get("type") == "json_invalid":
        detail = (errors[0].get("ctx") or {}).get("error")
        return error_response(ApiError(400, f"{BAD_JSON} ({detail})" if detail else BAD_JSON))
    return error_response(validation_error(errors, getattr(exc, "body", None)))


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    invalid_url = f"Invalid URL ({request.method} {request.url.path})"
    message = invalid_url if exc.status_code in (404, 405) else str(exc.detail)
    return error_response(ApiError(exc.status_code, message, code=None))


async def handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    return error_response(server_error(exc))
