"""The one shallow error tree.

Every error a caller can see carries an X-Road style code (``Client.*``,
``Server.ClientProxy.*``, ``Server.ServerProxy.*``, or a bare code that the proxy
prefixes with the side it happened on) and the HTTP status to answer with.
"""

from __future__ import annotations


class SecServerError(Exception):
    """Base of every error secserver raises on purpose."""

    code: str = "InternalError"
    http_status: int = 500

    def __init__(self, message: str, *, detail: str | None = None, code: str | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def __str__(self) -> str:
        return self.message


class InvalidIdentifier(SecServerError):
    """An X-Road identifier (client, service or server id) is malformed."""

    code = "InvalidIdentifier"
    http_status = 400


class ConfigError(SecServerError):
    """The node configuration is missing or invalid; ``problems`` lists every finding."""

    code = "ConfigError"
    http_status = 500

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
