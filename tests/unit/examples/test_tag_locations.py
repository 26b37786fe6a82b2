"""OTTA's sample REST service: pure parts and the aiohttp app on a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from secserver.examples.tag_locations import (
    ServiceError,
    TagStore,
    make_app,
    openapi,
    parse_alert,
    parse_since,
)

NOW = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = make_app(TagStore(), clock=lambda: NOW)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


def test_parse_since_accepts_offset_times_and_nothing() -> None:
    assert parse_since(None) is None
    assert parse_since("") is None
    assert parse_since("2026-11-21T08:00:00+09:00") == datetime(2026, 11, 20, 23, 0,
                                                                  tzinfo=UTC)


@pytest.mark.parametrize("raw", ["yesterday", "2026-11-21T08:00:00", "2026-13-01T00:00Z"])
def test_parse_since_refuses_bad_or_naive_times(raw: str) -> None:
    with pytest.raises(ServiceError) as info:
        parse_since(raw)
    assert info.value.status == 400
    assert info.value.code == "BadQuery"


@pytest.mark.parametrize("body", [[], {"type": "party"}, {"type": "fall", "message": 3},
                                  {"type": "sos", "message": "x" * 501}])
def test_parse_alert_refuses_bad_bodies(body: Any) -> None:
    with pytest.raises(ServiceError, match="must"):
        parse_alert(body)


def test_store_filters_locations_by_time_and_names_unknown_residents() -> None:
    store = TagStore()
    assert len(store.locations("R-1001", None)) == 3
    since = datetime.fromisoformat("2026-11-21T08:30:00+09:00")
    assert [p.place for p in store.locations("R-1001", since)] == [
        "Toyono station", "community centre"]
    with pytest.raises(ServiceError) as info:
        store.locations("R-9999", None)
    assert info.value.status == 404
    assert info.value.code == "UnknownResident"


async def test_tag_status_is_not_personal(client: TestClient[Any, Any]) -> None:
    response = await client.get("/tags/TAG-0002/status")
    assert response.status == 200
    body = await response.json()
    assert body == {"tagId": "TAG-0002", "batteryPercent": 12, "signal": "weak",
                    "lastContact": "2026-11-21T09:35:00+09:00"}
    assert "resident" not in str(body).lower()


async def test_locations_since(client: TestClient[Any, Any]) -> None:
    response = await client.get("/residents/R-1001/locations",
                                params={"since": "2026-11-21T09:00:00+09:00"})
    assert response.status == 200
    assert await response.json() == {"residentId": "R-1001", "locations": [
        {"at": "2026-11-21T09:40:00+09:00", "latitude": 36.707, "longitude": 138.2512,
         "place": "community centre"}]}


async def test_errors_are_json_with_a_code(client: TestClient[Any, Any]) -> None:
    response = await client.get("/residents/R-1001/locations", params={"since": "soon"})
    assert response.status == 400
    assert (await response.json())["error"] == "BadQuery"
    response = await client.get("/tags/TAG-9999/status")
    assert response.status == 404
    body = await response.json()
    assert body["error"] == "UnknownTag"
    assert "TAG-0001" in body["message"]


async def test_alerts_are_stored_with_the_calling_client(client: TestClient[Any, Any]) -> None:
    response = await client.post("/tags/TAG-0001/alerts",
                                 json={"type": "fall", "message": "fell near the station"},
                                 headers={"X-Road-Client": "JP-DEV/GOV/TOYONO/ELDERCARE"})
    assert response.status == 201
    alert = await response.json()
    assert alert == {"alertId": 1, "tagId": "TAG-0001", "type": "fall",
                     "message": "fell near the station", "receivedAt": NOW.isoformat(),
                     "raisedBy": "JP-DEV/GOV/TOYONO/ELDERCARE"}
    listed = await (await client.get("/tags/TAG-0001/alerts")).json()
    assert listed == {"tagId": "TAG-0001", "alerts": [alert]}
    assert (await (await client.get("/tags/TAG-0002/alerts")).json())["alerts"] == []


async def test_alert_with_broken_json_is_refused(client: TestClient[Any, Any]) -> None:
    response = await client.post("/tags/TAG-0001/alerts", data=b"{not json",
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"] == "BadAlert"
    response = await client.post("/tags/TAG-0404/alerts", json={"type": "sos"})
    assert response.status == 404


def test_openapi_describes_exactly_the_service_routes() -> None:
    document = openapi()
    assert document["openapi"].startswith("3.0")
    described = {(method.upper(), path) for path, item in document["paths"].items()
                 for method in item}
    app = make_app()
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None
              and route.resource.canonical not in ("/", "/openapi.json")}
    to_openapi = {"{tag_id}": "{tagId}", "{resident_id}": "{residentId}"}
    for old, new in to_openapi.items():
        served = {(m, p.replace(old, new)) for m, p in served}
    assert described == served


async def test_openapi_is_served(client: TestClient[Any, Any]) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert (await response.json())["info"]["title"] == "OTTA tag-locations"
