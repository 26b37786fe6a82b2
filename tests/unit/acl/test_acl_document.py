"""Registry documents as TOML and JSON."""

from __future__ import annotations

from typing import Any

import pytest

from secserver.acl.document import DocumentError, dump_json, dump_toml, load_document

DOCUMENT: dict[str, Any] = {
    "format": "secserver-registry/1",
    "members": [{"id": "JP-DEV/GOV/TOYONO", "name": 'Toyono "city"\n豊野\t\\'}],
    "subsystems": [{"id": "JP-DEV/GOV/TOYONO/RES", "local": True, "auth": "allowlist",
                    "tls_cert_sha256": None, "allowlist": ["127.0.0.1/32", "::1/128"]}],
    "services": [{"id": "JP-DEV/GOV/TOYONO/RES/people", "timeout": 2.5,
                  "requires_consent": False}],
    "rights": [],
}


def test_toml_round_trip_drops_only_nones() -> None:
    text = dump_toml(DOCUMENT)
    loaded = load_document(text)
    expected = {**DOCUMENT, "subsystems": [{k: v for k, v in DOCUMENT["subsystems"][0].items()
                                            if v is not None}]}
    del expected["rights"]  # an empty list of tables writes nothing
    assert loaded == expected


def test_json_round_trip_and_format_guess() -> None:
    assert load_document(dump_json(DOCUMENT)) == DOCUMENT
    assert load_document(dump_json(DOCUMENT), "json") == DOCUMENT


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("{", None, "not valid JSON"),
    ("a = ", None, "not valid TOML"),
    ("[1, 2]", "json", "top level"),
    ("x = 1", "yaml", "unknown document format"),
])
def test_bad_documents(text: str, fmt: str | None, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        load_document(text, fmt)


def test_unwritable_values() -> None:
    with pytest.raises(DocumentError, match=r"members\[0\].name"):
        dump_toml({"members": [{"name": object()}]})
