"""API errors: one OpenAI-style body, `{"error": {"message", "type", "param", "code"}}`, for every failure."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from assistant.errors import AssistantError, Code

__all__ = ["ApiError", "assistant_error_response", "error_body", "status_for"]

_STATUS = {
    Code.BAD_INPUT: 400,
    Code.CONTEXT_TOO_LONG: 400,
    Code.NOT_FOUND: 404,
    Code.MODEL_NOT_FOUND: 404,
    Code.MISSING_DEPENDENCY: 501,
    Code.BUSY: 429,
    Code.OUT_OF_MEMORY: 503,
    Code.MODEL_ERROR: 500,
    Code.CANCELLED: 499,
    Code.INTERNAL: 500,
}  # 499: the client closed the request (nginx's code); nobody is left to read it


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_


def status_for(code: str) -> int:
    return _STATUS.get(code, 500)


def error_body(message: str, code: str, type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def assistant_error_response(err: AssistantError) -> JSONResponse:
    status = status_for(err.code)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse(error_body(err.message, str(err.code), kind), status_code=status)
