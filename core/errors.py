"""Domain exceptions; the API maps each to one HTTP status in one middleware."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a client can cause; `message` is shown to the client. `code` is
    Twilio's code for it, where the Twilio face says one (api/middlewares.py picks one by
    status otherwise)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BadRequest(DomainError):
    pass


class Unauthorized(DomainError):
    pass


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    pass


class Unprocessable(DomainError):
    """Well-formed but not acceptable now (a reused Idempotency-Key with another body)."""


class InvalidTransition(Unprocessable):
    def __init__(self, current: str, target: str, event: str) -> None:
        super().__init__(
            f"Invalid transition: {event} cannot move a call from {current} to {target}"
        )
        self.current, self.target, self.event = current, target, event


class RateLimited(DomainError):
    """A limit refused a request; carries what the Retry-After and RateLimit-* headers say
    (`policy`: the RateLimit-Policy header of the limits that apply, when there are several)."""

    def __init__(
        self, message: str, *, limit: int, remaining: int, reset_s: int, policy: str | None = None
    ) -> None:
        super().__init__(message)
        self.limit, self.remaining, self.reset_s = limit, remaining, reset_s
        self.policy = policy
