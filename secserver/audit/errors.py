"""Errors of the message log. The proxy prefixes the bare codes with its side
(``Server.ClientProxy.`` or ``Server.ServerProxy.``)."""

from __future__ import annotations

from secserver.errors import SecServerError


class LoggingFailed(SecServerError):
    """A record could not be durably written: nothing may be forwarded (fail closed)."""

    code = "LoggingFailed"
    http_status = 500


class LogTimestampOverdue(SecServerError):
    """The oldest checkpoint has waited for a timestamp longer than ``[tsa] grace_period``;
    the node refuses new messages until the TSA answers again."""

    code = "LogTimestampOverdue"
    http_status = 503


class AuditError(SecServerError):
    """An auditor command cannot do what was asked (unknown message id, unreadable
    archive or bundle, wrong option)."""

    code = "AuditError"
    http_status = 400
