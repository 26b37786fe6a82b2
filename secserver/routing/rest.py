"""The REST adapter (X-Road message protocol for REST, ``r1``). Pure.

``parse_rest_request`` turns a request head as received (method, raw target, headers) into
an ``ExchangeRequest``; it never follows the target or Host, and it refuses ambiguous paths
(see ``secserver.acl.paths.normalise_path``) so the path the access check sees is the path
the backend gets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from secserver.acl.paths import InvalidPath, normalise_path
from secserver.errors import InvalidIdentifier
from secserver.identifiers import ClientId, ServiceId, parse_rest_service_path
from secserver.routing import headers as h
from secserver.routing.errors import (
    InvalidClientIdentifier,
    InvalidRequest,
    InvalidServiceIdentifier,
    MissingHeaderField,
)

REST_PREFIX = "/r1/"
REST_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# white space, controls, '#' and '\\' in a query
_QUERY_BAD = re.compile(r"[\x00-\x20#\\\x7f]")


@dataclass(frozen=True)
class ExchangeRequest:
    """What the exchange needs of one request, REST or SOAP.

    ``path`` is the raw service path after the service id (REST; ``""`` for SOAP and for
    a REST call of the service root), ``query`` the raw query without ``?``; ``headers``
    are the end-to-end headers, lower-cased and sorted, exactly as signed and forwarded.
    """

    kind: Literal["rest", "soap"]
    client: ClientId
    service: ServiceId
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    message_id: str | None = None
    user_id: str | None = None
    issue: str | None = None
    data_subject: str | None = None

    @property
    def acl_path(self) -> str:
        """The normalised path the access decision is made on."""
        return normalise_path(self.path) if self.path else "/"

    @property
    def path_and_query(self) -> str:
        """What the signed document's ``path`` holds: the target after the service part,
        as sent, with ``?query`` when there is one (empty for SOAP)."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def target(self) -> str:
        """The origin-form target between security servers (REST) or ``/`` (SOAP)."""
        if self.kind == "soap":
            return "/"
        target = REST_PREFIX + self.service.url_path() + self.path
        return f"{target}?{self.query}" if self.query else target


def split_target(target: str) -> tuple[str, str]:
    """``(path, query)`` of an origin-form target; the query keeps its encoding."""
    h.check_origin_form(target)
    path, _, query = target.partition("?")
    if query and _QUERY_BAD.search(query) is not None:
        raise InvalidRequest("the query string contains white space or control characters")
    return path, query


@lru_cache(maxsize=4096)
def _cached_client(text: str) -> ClientId:
    return ClientId.parse(text)  # frozen: safe to share; errors are not cached


@lru_cache(maxsize=4096)
def _cached_service(service_part: str) -> ServiceId:
    service, _ = parse_rest_service_path(service_part)
    return service


def _service_and_rest(after_prefix: str) -> tuple[ServiceId, str]:
    """Like ``parse_rest_service_path``, with the five service segments' parse cached."""
    segments = after_prefix.split("/", 5)
    if len(segments) < 5:
        return parse_rest_service_path(after_prefix)  # raises with the full explanation
    service = _cached_service("/".join(segments[:5]))
    return service, ("/" + segments[5] if len(segments) > 5 else "")


def parse_client_header(value: str | None) -> ClientId:
    if value is None:
        raise MissingHeaderField(f"the {h.X_CLIENT} header is missing; send "
                                 "INSTANCE/CLASS/MEMBER/SUBSYSTEM of the calling subsystem")
    try:
        client = _cached_client(value.strip())
    except InvalidIdentifier as exc:
        raise InvalidClientIdentifier(f"{h.X_CLIENT}: {exc.message}") from exc
    if not client.is_subsystem:
        raise InvalidClientIdentifier(f"{h.X_CLIENT} {value!r} names a member; the client "
                                      "of a call is always a subsystem")
    return client


def parse_rest_request(method: str, target: str, headers: Iterable[tuple[str, str]], *,
                       new_message_id: Callable[[], str] | None = None) -> ExchangeRequest:
    """Parse a REST call head as the information system (or a consumer SS) sent it.

    ``new_message_id``: called for the message id when the head has no ``X-Road-Id``
    (the consumer's ``str(uuid.uuid4())``), so no copy of the result is needed for it."""
    pairs = h.lowered(headers)
    method = method.upper()
    if method not in REST_METHODS:
        raise InvalidRequest(f"HTTP method {method} is not allowed on the exchange; use one "
                             f"of {', '.join(sorted(REST_METHODS))}")
    path, query = split_target(target)
    if not path.startswith(REST_PREFIX):
        raise InvalidRequest(f"REST calls go to {REST_PREFIX}INSTANCE/CLASS/MEMBER/SUBSYSTEM/"
                             "SERVICE[/path]; SOAP envelopes are posted to /")
    try:
        service, rest = _service_and_rest(path[len(REST_PREFIX):])
    except InvalidIdentifier as exc:
        raise InvalidServiceIdentifier(exc.message) from exc
    if rest:
        try:
            normalise_path(rest)
        except InvalidPath as exc:
            raise InvalidRequest(exc.message) from exc
    x_road = h.x_road_values(pairs)
    client = parse_client_header(h.single_of(x_road, h.X_CLIENT))
    message_id = h.single_of(x_road, h.X_ID)
    if message_id is not None:
        h.check_message_id(message_id, h.X_ID)
    elif new_message_id is not None:
        message_id = new_message_id()
    user_id = h.single_of(x_road, h.X_USER_ID)
    issue = h.single_of(x_road, h.X_ISSUE)
    subject = h.single_of(x_road, h.X_DATA_SUBJECT)
    for value, name in ((user_id, h.X_USER_ID), (issue, h.X_ISSUE),
                        (subject, h.X_DATA_SUBJECT)):
        if value is not None:
            h.check_text(value, name)
    return ExchangeRequest(
        kind="rest", client=client, service=service, method=method, path=rest, query=query,
        headers=h.signed_headers_lowered(pairs), message_id=message_id, user_id=user_id,
        issue=issue, data_subject=subject,
    )


def backend_target(backend_url: str, request: ExchangeRequest) -> str:
    """The URL the provider forwards to: the registered base URL plus path and query.

    Only the registered URL decides scheme, host and port; the request adds a path below
    the base path (already validated: no dot segments, no encoded slashes) and its query.
    """
    parts = urlsplit(backend_url)
    path = parts.path.rstrip("/") + request.path if request.path else parts.path
    query = "&".join(q for q in (parts.query, request.query) if q)
    # the registered URL's fragment is dropped (it never reaches a server anyway): text
    # appended after it would be fragment too, and the path and query lost
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))
