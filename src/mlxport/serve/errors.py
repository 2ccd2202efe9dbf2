"""Typed serving errors: one status code per class, one handler table in the app, body ``{"error": str}``."""

from __future__ import annotations


class ServeError(Exception):
    """Base class; anything unexpected is a 500 with its message (never a traceback)."""

    status = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class InvalidInput(ServeError):
    """The request body, a tensor's name, shape or dtype, or a parameter is wrong."""

    status = 400


class Unauthorized(ServeError):
    """A bearer token is configured and the request has none or a wrong one."""

    status = 401

    def __init__(self, message: str = "missing or wrong bearer token: send 'Authorization: Bearer <token>'") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServeError):
    """The request asks for something the server refuses to do (a model path outside the allowed roots)."""

    status = 403


class ModelNotFound(ServeError):
    """No such model or version in the repository."""

    status = 404


class Conflict(ServeError):
    """The model name is already loaded (SageMaker multi-model API)."""

    status = 409


class NotAcceptable(ServeError):
    """The Accept header names no response type the endpoint can produce."""

    status = 406


class PayloadTooLarge(ServeError):
    """The body is larger than --max-body-size."""

    status = 413


class UnsupportedMediaType(ServeError):
    """The Content-Type is not one the endpoint reads."""

    status = 415


class ModelNotReady(ServeError):
    """The model exists but is still loading or warming up."""

    status = 503


class Overloaded(ServeError):
    """The model's queue or the server's concurrency limit is full: retry later."""

    status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


class InferenceTimeout(ServeError):
    """The request did not finish within --request-timeout."""

    status = 504


class ModelLoadError(ServeError):
    """A model asked for through the load API cannot be loaded (bad artifact, would not fit the memory limit)."""

    status = 400


class InsufficientMemory(ModelLoadError):
    """Loading the model would go over --memory-limit."""

    status = 507


class ModelFailure(ServeError):
    """The model raised while running; the server keeps serving."""

    status = 500
