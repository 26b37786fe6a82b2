"""The exchange's coded errors (X-Road taxonomy) and how a code is qualified.

An error raised by the exchange carries a *bare* code (``AccessDenied``) and whether the
caller's own request caused it (``client_fault``). Where it is answered decides the final
code: a consumer-side error caused by the information system's request becomes
``Client.<code>``; any other becomes ``Server.ClientProxy.<code>`` on the consumer node and
``Server.ServerProxy.<code>`` on the provider node. A code that already starts with
``Client.`` or ``Server.`` (relayed from the provider) is answered unchanged.
"""

from __future__ import annotations

from typing import Literal

from secserver.errors import SecServerError

Side = Literal["ClientProxy", "ServerProxy"]


class ExchangeError(SecServerError):
    """Base of the exchange's errors; subclasses set ``code`` and ``http_status``."""

    client_fault: bool = False
    logged: bool = False  # set once the failure has its log record


class InvalidRequest(ExchangeError):
    code = "InvalidRequest"
    http_status = 400
    client_fault = True


class InvalidClientIdentifier(ExchangeError):
    code = "InvalidClientIdentifier"
    http_status = 400
    client_fault = True


class InvalidServiceIdentifier(ExchangeError):
    code = "InvalidServiceIdentifier"
    http_status = 400
    client_fault = True


class MissingHeaderField(ExchangeError):
    code = "MissingHeaderField"
    http_status = 400
    client_fault = True


class DuplicateHeaderField(ExchangeError):
    code = "DuplicateHeaderField"
    http_status = 400
    client_fault = True


class InvalidXml(ExchangeError):
    code = "InvalidXml"
    http_status = 400
    client_fault = True


class InvalidSoap(ExchangeError):
    code = "InvalidSoap"
    http_status = 400
    client_fault = True


class InvalidProtocolVersion(ExchangeError):
    code = "InvalidProtocolVersion"
    http_status = 400
    client_fault = True


class InvalidContentType(ExchangeError):
    code = "InvalidContentType"
    http_status = 415
    client_fault = True


class MessageTooLarge(ExchangeError):
    code = "MessageTooLarge"
    http_status = 413
    client_fault = True


class RequestTimeout(ExchangeError):
    code = "RequestTimeout"
    http_status = 408
    client_fault = True


class UnknownMember(ExchangeError):
    """A client that is not a local subsystem, or a provider with no security server."""

    code = "UnknownMember"
    http_status = 400
    client_fault = True


class UnknownService(ExchangeError):
    code = "UnknownService"
    http_status = 404


class SslAuthenticationFailed(ExchangeError):
    """A TLS peer is not who it must be (client system, or another security server)."""

    code = "SslAuthenticationFailed"
    http_status = 403


class AccessDenied(ExchangeError):
    code = "AccessDenied"
    http_status = 403


class MissingSignature(ExchangeError):
    code = "MissingSignature"
    http_status = 400


class InvalidMessage(ExchangeError):
    """The message between security servers does not match its signed document."""

    code = "InvalidMessage"
    http_status = 400


class DuplicateMessageId(ExchangeError):
    code = "DuplicateMessageId"
    http_status = 409


class NetworkError(ExchangeError):
    code = "NetworkError"
    http_status = 502


class PeerUnreachable(NetworkError):
    """No connection to a security server could be made (the next one may be tried)."""


class InconsistentResponse(ExchangeError):
    code = "InconsistentResponse"
    http_status = 502


class ServiceNetworkError(ExchangeError):
    """The provider's backend refused or dropped the connection."""

    code = "ServiceFailed.NetworkError"
    http_status = 502


class ServiceTimeout(ExchangeError):
    code = "ServiceFailed.Timeout"
    http_status = 504


class ServiceInvalidResponse(ExchangeError):
    """The backend answered something that is not a usable HTTP (or SOAP) response."""

    code = "ServiceFailed.InvalidResponse"
    http_status = 502


class InternalError(ExchangeError):
    code = "InternalError"
    http_status = 500


class RelayedError(ExchangeError):
    """An error answered by the provider's security server, passed on unchanged."""

    def __init__(self, code: str, http_status: int, message: str,
                 detail: str | None = None) -> None:
        super().__init__(message, detail=detail, code=code, http_status=http_status)


def qualified_code(error: SecServerError, side: Side) -> str:
    """The full X-Road code for ``error`` answered on ``side``."""
    code = error.code
    if code.startswith(("Client.", "Server.")):
        return code
    if side == "ClientProxy" and getattr(error, "client_fault", False):
        return f"Client.{code}"
    return f"Server.{side}.{code}"
