"""The scenario's requests and judges, pure: no processes."""

from __future__ import annotations

import json

from secserver.demo.layout import OTTA_TAGS, RESIDENT_REGISTRY, TAG_LOCATIONS, TOYONO_ELDERCARE
from secserver.demo.scenario import (
    ACCESS_DENIED,
    Answer,
    Outcome,
    Step,
    error_of,
    judge_locations,
    judge_refused,
    judge_resident,
    render_step,
    rest_request,
    soap_request,
)
from secserver.examples import resident_registry

LOCATIONS = json.dumps({"residentId": "R-1001", "locations": [
    {"at": "2026-11-21T09:40:00+09:00", "place": "community centre"}]}).encode()
XROAD_HEADERS = {"x-road-id": "m-1", "x-road-request-hash": "abc"}


def test_rest_request_is_the_xroad_r1_form() -> None:
    request = rest_request(TOYONO_ELDERCARE, TAG_LOCATIONS, "GET",
                           "/residents/R-1001/locations?since=x", data_subject="R-1001")
    assert request.target == ("/r1/JP-DEV/COM/OTTA/TAGS/tag-locations"
                              "/residents/R-1001/locations?since=x")
    assert request.headers["X-Road-Client"] == "JP-DEV/GOV/TOYONO/ELDERCARE"
    assert request.headers["X-Road-Data-Subject"] == "R-1001"
    posted = rest_request(TOYONO_ELDERCARE, TAG_LOCATIONS, "POST", "/tags/T/alerts",
                          body={"type": "sos"})
    assert posted.headers["Content-Type"] == "application/json"
    assert json.loads(posted.body) == {"type": "sos"}


def test_judge_locations_needs_positions_and_xroad_headers() -> None:
    good = judge_locations(Answer(200, "OK", XROAD_HEADERS, LOCATIONS), "R-1001")
    assert good.ok and "1 position(s)" in good.summary and "m-1" in good.summary
    assert not judge_locations(Answer(200, "OK", {}, LOCATIONS), "R-1001").ok
    assert not judge_locations(Answer(200, "OK", XROAD_HEADERS, LOCATIONS), "R-1002").ok
    denied = Answer(403, "Forbidden", {"x-road-error": ACCESS_DENIED},
                    b'{"type": "x", "message": "consent missing"}')
    outcome = judge_locations(denied, "R-1001")
    assert not outcome.ok and ACCESS_DENIED in outcome.summary


def test_judge_refused_checks_code_and_reason() -> None:
    body = json.dumps({"type": ACCESS_DENIED, "message": "consent missing: none"}).encode()
    refused = Answer(403, "Forbidden", {"x-road-error": ACCESS_DENIED}, body)
    assert judge_refused(refused, ACCESS_DENIED, "consent").ok
    assert not judge_refused(refused, ACCESS_DENIED, "right").ok
    assert not judge_refused(refused, "Server.ServerProxy.UnknownService", "consent").ok
    passed = Answer(200, "OK", XROAD_HEADERS, LOCATIONS)
    assert "passed" in judge_refused(passed, ACCESS_DENIED, "consent").summary


def test_the_demo_soap_request_is_answered_by_the_sample_service() -> None:
    request = soap_request(OTTA_TAGS, RESIDENT_REGISTRY, "R-1001", "msg-7")
    status, body = resident_registry.answer(request.body, resident_registry.SAMPLE_RESIDENTS)
    assert status == 200
    outcome = judge_resident(Answer(status, "OK", {}, body), "R-1001", "msg-7")
    assert outcome.ok, outcome.summary
    assert "Yamada Hanako" in outcome.summary
    assert not judge_resident(Answer(status, "OK", {}, body), "R-1001", "other").ok


def test_soap_faults_are_read_as_errors() -> None:
    request = soap_request(OTTA_TAGS, RESIDENT_REGISTRY, "R-9999", "msg-8")
    status, body = resident_registry.answer(request.body, resident_registry.SAMPLE_RESIDENTS)
    answer = Answer(status, "Internal Server Error", {}, body)
    assert error_of(answer) == ("SOAP-ENV:Client", "no resident R-9999 in TOYONO's registry")
    assert not judge_resident(answer, "R-9999", "msg-8").ok


def test_render_step_marks_failures() -> None:
    step = Step(4, "title", "call", "expect", Outcome(False, "what happened"), ("note",))
    text = render_step(step)
    assert text.splitlines()[0] == "[4] FAIL title"
    assert "got: what happened" in text and "note" in text
