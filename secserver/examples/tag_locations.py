"""OTTA's REST ``tag-locations`` service: where the watch tags of elderly residents are.

Service id in the demo: ``JP-DEV/COM/OTTA/TAGS/tag-locations``. Endpoints:

* ``GET /tags/{tagId}/status``: battery, signal and last contact of one tag. Says nothing
  about who wears it: not personal data.
* ``GET /residents/{residentId}/locations[?since=ISO-8601]``: the positions of the tag a
  resident wears, newest last. Personal data: the data subject is the resident, and the
  security server only forwards the call when the resident has consented.
* ``POST /tags/{tagId}/alerts`` with ``{"type": "fall|wandering|sos|battery",
  "message": "..."}``: raise an alert on a tag (201 with the stored alert).
* ``GET /tags/{tagId}/alerts``: the alerts raised on a tag.
* ``GET /openapi.json``: this description as OpenAPI 3.0 (``tag_locations.openapi.json``).

Errors are JSON ``{"error": CODE, "message": TEXT}`` with a fitting status. The data is a
small, fixed, in-memory sample; alerts live as long as the process.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

ALERT_TYPES = ("fall", "wandering", "sos", "battery")
MAX_ALERT_MESSAGE = 500


@dataclass(frozen=True)
class Position:
    at: datetime
    latitude: float
    longitude: float
    place: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "latitude": self.latitude,
                "longitude": self.longitude, "place": self.place}


@dataclass(frozen=True)
class Tag:
    tag_id: str
    resident_id: str
    battery_percent: int
    signal: str
    last_contact: datetime

    def status_json(self) -> dict[str, Any]:
        return {"tagId": self.tag_id, "batteryPercent": self.battery_percent,
                "signal": self.signal, "lastContact": self.last_contact.isoformat()}


@dataclass(frozen=True)
class Alert:
    alert_id: int
    tag_id: str
    type: str
    message: str
    received_at: datetime
    raised_by: str | None

    def to_json(self) -> dict[str, Any]:
        return {"alertId": self.alert_id, "tagId": self.tag_id, "type": self.type,
                "message": self.message, "receivedAt": self.received_at.isoformat(),
                "raisedBy": self.raised_by}


class ServiceError(Exception):
    """A request the service refuses: a code, a status and a message for the caller."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


SAMPLE_TAGS: tuple[Tag, ...] = (
    Tag("TAG-0001", "R-1001", 87, "good", _t("2026-11-21T09:40:00+09:00")),
    Tag("TAG-0002", "R-1002", 12, "weak", _t("2026-11-21T09:35:00+09:00")),
    Tag("TAG-0003", "R-1003", 64, "good", _t("2026-11-21T09:41:00+09:00")),
)

SAMPLE_POSITIONS: dict[str, tuple[Position, ...]] = {
    "R-1001": (
        Position(_t("2026-11-21T07:00:00+09:00"), 36.7025, 138.2460, "home"),
        Position(_t("2026-11-21T08:30:00+09:00"), 36.7051, 138.2489, "Toyono station"),
        Position(_t("2026-11-21T09:40:00+09:00"), 36.7070, 138.2512, "community centre"),
    ),
    "R-1002": (
        Position(_t("2026-11-21T06:50:00+09:00"), 36.6990, 138.2421, "home"),
        Position(_t("2026-11-21T09:35:00+09:00"), 36.6993, 138.2430, "apple orchard"),
    ),
    "R-1003": (
        Position(_t("2026-11-21T09:41:00+09:00"), 36.7102, 138.2555, "home"),
    ),
}


@dataclass
class TagStore:
    """The service's data: fixed tags and positions, alerts added at run time."""

    tags: dict[str, Tag] = field(default_factory=lambda: {t.tag_id: t for t in SAMPLE_TAGS})
    positions: dict[str, tuple[Position, ...]] = field(
        default_factory=lambda: dict(SAMPLE_POSITIONS))
    alerts: list[Alert] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def tag(self, tag_id: str) -> Tag:
        try:
            return self.tags[tag_id]
        except KeyError:
            raise ServiceError(404, "UnknownTag", f"no tag {tag_id!r}; known tags are "
                               f"{', '.join(sorted(self.tags))}") from None

    def locations(self, resident_id: str, since: datetime | None) -> Sequence[Position]:
        if resident_id not in self.positions:
            raise ServiceError(404, "UnknownResident",
                               f"no tag is registered for resident {resident_id!r}")
        return [p for p in self.positions[resident_id] if since is None or p.at >= since]

    def raise_alert(self, tag_id: str, body: Any, raised_by: str | None,
                    now: datetime) -> Alert:
        self.tag(tag_id)
        alert_type, message = parse_alert(body)
        alert = Alert(next(self._ids), tag_id, alert_type, message, now, raised_by)
        self.alerts.append(alert)
        return alert


def parse_since(raw: str | None) -> datetime | None:
    """The ``since`` query parameter: an ISO 8601 time with a UTC offset, or none."""
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ServiceError(400, "BadQuery", f"since={raw!r} is not an ISO 8601 time, "
                           "e.g. 2026-11-21T08:00:00+09:00") from None
    if value.tzinfo is None:
        raise ServiceError(400, "BadQuery", f"since={raw!r} needs a UTC offset, "
                           "e.g. 2026-11-21T08:00:00+09:00")
    return value


def parse_alert(body: Any) -> tuple[str, str]:
    """Validate an alert body: ``{"type": one of ALERT_TYPES, "message": text}``."""
    if not isinstance(body, dict):
        raise ServiceError(400, "BadAlert", "the body must be a JSON object with "
                           "'type' and 'message'")
    alert_type = body.get("type")
    message = body.get("message", "")
    if alert_type not in ALERT_TYPES:
        raise ServiceError(400, "BadAlert", f"type must be one of {', '.join(ALERT_TYPES)}; "
                           f"got {alert_type!r}")
    if not isinstance(message, str) or len(message) > MAX_ALERT_MESSAGE:
        raise ServiceError(400, "BadAlert",
                           f"message must be text of at most {MAX_ALERT_MESSAGE} characters")
    return alert_type, message


STORE = web.AppKey("store", TagStore)
CLOCK = web.AppKey[Callable[[], datetime]]("clock")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except ServiceError as exc:
        return _json({"error": exc.code, "message": exc.message}, exc.status)
    return response


def openapi() -> dict[str, Any]:
    """The service description (OpenAPI 3.0) that ships next to this module."""
    text = resources.files("secserver.examples").joinpath("tag_locations.openapi.json") \
        .read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


async def index(request: web.Request) -> web.Response:
    return _json({"service": "tag-locations", "provider": "OTTA",
                  "description": "/openapi.json",
                  "endpoints": ["GET /tags/{tagId}/status",
                                "GET /residents/{residentId}/locations?since=ISO-8601",
                                "POST /tags/{tagId}/alerts", "GET /tags/{tagId}/alerts"]})


async def openapi_document(request: web.Request) -> web.Response:
    return _json(openapi())


async def tag_status(request: web.Request) -> web.Response:
    return _json(request.app[STORE].tag(request.match_info["tag_id"]).status_json())


async def resident_locations(request: web.Request) -> web.Response:
    resident_id = request.match_info["resident_id"]
    since = parse_since(request.query.get("since"))
    positions = request.app[STORE].locations(resident_id, since)
    return _json({"residentId": resident_id, "locations": [p.to_json() for p in positions]})


async def post_alert(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ServiceError(400, "BadAlert", "the body is not valid JSON") from None
    alert = request.app[STORE].raise_alert(request.match_info["tag_id"], body,
                                           request.headers.get("X-Road-Client"),
                                           request.app[CLOCK]())
    return _json(alert.to_json(), 201)


async def list_alerts(request: web.Request) -> web.Response:
    store = request.app[STORE]
    tag_id = store.tag(request.match_info["tag_id"]).tag_id
    return _json({"tagId": tag_id,
                  "alerts": [a.to_json() for a in store.alerts if a.tag_id == tag_id]})


def make_app(store: TagStore | None = None,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    app[STORE] = store if store is not None else TagStore()
    app[CLOCK] = clock
    app.router.add_get("/", index)
    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_get("/tags/{tag_id}/status", tag_status)
    app.router.add_get("/residents/{resident_id}/locations", resident_locations)
    app.router.add_post("/tags/{tag_id}/alerts", post_alert)
    app.router.add_get("/tags/{tag_id}/alerts", list_alerts)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    from secserver.examples.runner import main as run

    run("OTTA's sample REST service tag-locations (watch-tag positions).", make_app, argv)


if __name__ == "__main__":
    main()
