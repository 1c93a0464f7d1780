"""Named errors of authentication and authorization: 401s, 403s, bad settings, bad key sets."""

from __future__ import annotations

import re
from typing import ClassVar

# RFC 6750 error_description: printable ASCII without '"' and '\\'.
_QUOTABLE = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]*")
_UNQUOTABLE = re.compile(r"[^\x20\x21\x23-\x5B\x5D-\x7E]")


class AuthConfigError(ValueError):
    """Authentication is configured wrongly; ``setting`` names the field or variable."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting}: {detail}")
        self.setting = setting
        self.detail = detail


class KeySetError(Exception):
    """A JWKS could not be read, or holds no key usable for the configured algorithms."""


class AuthError(Exception):
    """A request refused by authentication or authorization.

    ``str(error)`` is safe to show the client: it never contains the token.
    """

    status: ClassVar[int]

    def __init__(self, message: str, *, error: str | None, realm: str = "wallet", scope: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The RFC 6750 error code, or None when the request carried no bearer token at all.
        self.error = error
        self.realm = realm
        self.scope = scope

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header value for the response (RFC 6750 section 3)."""
        parts = [f'Bearer realm="{_quotable(self.realm)}"']
        if self.error is not None:
            parts.append(f'error="{self.error}"')
            parts.append(f'error_description="{_quotable(self.message)}"')
        if self.scope is not None:
            parts.append(f'scope="{_quotable(self.scope)}"')
        return ", ".join(parts)


class Unauthorized(AuthError):
    """No valid bearer token: answer 401 with :attr:`www_authenticate`."""

    status = 401

    def __init__(self, message: str, *, error: str | None = "invalid_token", realm: str = "wallet") -> None:
        super().__init__(message, error=error, realm=realm)


class KeysUnavailable(Unauthorized):
    """The issuer's signing keys could not be fetched, so the token could not be checked.

    Still a 401 (the request is not authenticated), but the fault is on the server's
    side: a client may retry, and operators should look at the logs.
    """


class Forbidden(AuthError):
    """A valid token that does not grant the operation: answer 403 with :attr:`www_authenticate`."""

    status = 403

    def __init__(self, message: str, *, realm: str = "wallet", scope: str | None = None) -> None:
        super().__init__(message, error="insufficient_scope", realm=realm, scope=scope)


class InvalidClaims(ValueError):
    """A verified token whose claims do not have the shape this API needs."""


def _quotable(text: str) -> str:
    """``text`` with what a quoted-string in WWW-Authenticate may not hold replaced."""
    return text if _QUOTABLE.fullmatch(text) else _UNQUOTABLE.sub("?", text)
