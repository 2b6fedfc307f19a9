"""Named errors: a stable `code` for programs and a one-line `message` for people."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AssistantError",
    "BadInput",
    "Code",
    "EngineBusy",
    "MissingDependency",
    "ModelError",
    "ModelNotFound",
    "NotFound",
]


class Code(StrEnum):
    BAD_INPUT = "bad_input"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    MISSING_DEPENDENCY = "missing_dependency"
    MODEL_ERROR = "model_error"
    OUT_OF_MEMORY = "out_of_memory"
    CONTEXT_TOO_LONG = "context_too_long"
    BUSY = "busy"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class AssistantError(Exception):
    """Base of every error the assistant reports to a user."""

    code: Code = Code.INTERNAL
    exit_code: int = 1

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class BadInput(AssistantError):
    """The user's input cannot be used (unreadable file, empty turn, too long...)."""

    code = Code.BAD_INPUT
    exit_code = 2


class NotFound(AssistantError):
    """A named thing (persona, user, memory, file) does not exist."""

    code = Code.NOT_FOUND
    exit_code = 2


class ModelNotFound(AssistantError):
    code = Code.MODEL_NOT_FOUND


class MissingDependency(AssistantError):
    code = Code.MISSING_DEPENDENCY


class ModelError(AssistantError):
    code = Code.MODEL_ERROR


class EngineBusy(AssistantError):
    code = Code.BUSY
