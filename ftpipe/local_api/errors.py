"""OpenAI's error envelope for the local server: `{"error": {message, type, param, code}}`."""

from __future__ import annotations

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


async def handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 details become one OpenAI-style 400 naming the first bad parameter."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return error_response(ApiError(400, BAD_JSON))
    if location[:1] == ["body"] and (len(location) == 1 or location[1].isdigit()):
        return error_response(ApiError(400, "The request body must be a JSON object."))
    param = ".".join(part for part in location if part not in ("body", "query", "path")) or None
    if first.get("type") == "extra_forbidden":
        return error_response(ApiError(400, f"Unrecognized request argument supplied: {param}"))
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
        return error_response(
            ApiError(400, message, param=param, code="missing_required_parameter")
        )
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid request')}"
    return error_response(ApiError(400, message, param=param, code="invalid_value"))


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    invalid_url = f"Invalid URL ({request.method} {request.url.path})"
    message = invalid_url if exc.status_code in (404, 405) else str(exc.detail)
    return error_response(ApiError(exc.status_code, message, code=None))


async def handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    return error_response(
        ApiError(500, f"The local server had an error: {exc}", code="server_error")
    )
