"""Path normalisation and endpoint patterns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secserver.acl.paths import (
    InvalidPath,
    compile_pattern,
    normalise_method,
    normalise_path,
    normalise_pattern,
)


@pytest.mark.parametrize(("raw", "expected"), [
    ("", "/"),
    ("/", "/"),
    ("/people/42", "/people/42"),
    ("/people/42/", "/people/42/"),
    ("/%61dmin", "/admin"),
    ("/a%2db", "/a-b"),
    ("/a%20b", "/a%20b"),
    ("/caf%c3%a9", "/caf%C3%A9"),
    ("/café", "/caf%C3%A9"),
    ("/100%25", "/100%25"),
    ("/100%25x", "/100%25x"),
    ("/.well-known/x", "/.well-known/x"),
    ("/a/.../b", "/a/.../b"),
    ("/x;v=1", "/x;v=1"),
    ("/tag:1@x", "/tag:1@x"),
])
def test_normalises(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected
    assert normalise_path(expected) == expected


@pytest.mark.parametrize(("raw", "fragment"), [
    ("/a/../b", "dot segment"),
    ("/a/./b", "dot segment"),
    ("/..", "dot segment"),
    ("/a/..", "dot segment"),
    ("/a/%2e%2e/b", "dot segment"),
    ("/a/%2E/b", "dot segment"),
    ("/a/.%2e/b", "dot segment"),
    ("/public/..;/admin", "dot segment"),
    ("/public/.;x/admin", "dot segment"),
    ("/a%2Fb", "encoded '/'"),
    ("/a%2fb", "encoded '/'"),
    ("/a%5Cb", "backslash"),
    ("/a\\b", "backslash"),
    ("//a", "empty segment"),
    ("/a//b", "empty segment"),
    ("/a/b//", "empty segment"),
    ("/a%00b", "control character"),
    ("/a\x00b", r"U\+0000"),
    ("/a%0a", "control character"),
    ("/a\tb", r"U\+0009"),
    ("/a b", r"U\+0020"),
    ("/a%zz", "malformed percent"),
    ("/a%2", "malformed percent"),
    ("/a%", "malformed percent"),
    ("/%ff", "not valid UTF-8"),
    ("/%c0%ae%c0%ae/x", "not valid UTF-8"),  # overlong '.', a classic traversal trick
    ("people", "must start with '/'"),
    ("/a?b=1", "without query"),
    ("/a#frag", "without query"),
    ("/%252e%252e/admin", "percent-encoded twice"),
    ("/a%252Fb", "percent-encoded twice"),
    ("/public/..%e2%80%a8/x", "control character"),  # U+2028 line separator
    ("/public/..%20/x", "dot segment"),  # '.. ' trimmed by a backend
    ("/public/%ef%bc%8e%ef%bc%8e/x", "dot segment"),  # fullwidth dots, NFKC '..'
    ("/public/%e2%80%a4%e2%80%a4/x", "dot segment"),  # one-dot leaders, NFKC '..'

])
def test_refuses_ambiguous_paths(raw: str, fragment: str) -> None:
    with pytest.raises(InvalidPath, match=fragment) as info:
        normalise_path(raw)
    assert info.value.http_status == 400 and info.value.code == "InvalidPath"


def test_refuses_overlong_paths() -> None:
    with pytest.raises(InvalidPath, match="at most"):
        normalise_path("/a" * 5000)


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("/people", "/people", True),
    ("/people", "/people/", False),
    ("/people", "/people/1", False),
    ("/people/*", "/people/1", True),
    ("/people/*", "/people/", False),
    ("/people/*", "/people", False),
    ("/people/*", "/people/1/x", False),
    ("/people/*/address", "/people/7/address", True),
    ("/people/*/address", "/people/7/8/address", False),
    ("/files/*.json", "/files/a.json", True),
    ("/files/*.json", "/files/a/b.json", False),
    ("/files/*.json", "/files/a.xml", False),
    ("/files/**", "/files", True),
    ("/files/**", "/files/", True),
    ("/files/**", "/files/a/b/c", True),
    ("/files/**", "/filesx", False),
    ("/files/**", "/other/files/a", False),
    ("/a/**/z", "/a/z", True),
    ("/a/**/z", "/a/b/c/z", True),
    ("/a/**/z", "/a/b/c/zz", False),
    ("/**", "/", True),
    ("/**", "/anything/at/all", True),
    ("/%61dmin/*", "/admin/x", True),
    ("/a.b/*", "/aXb/c", False),  # '.' is literal, not a regex wildcard
    ("/(x)+/*", "/(x)+/c", True),
])
def test_patterns(pattern: str, path: str, matches: bool) -> None:
    assert compile_pattern(pattern).matches(normalise_path(path)) is matches


@pytest.mark.parametrize("pattern", ["/a/**x", "/a/../b", "a/b", "/a//b", "/a%2Fb"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(InvalidPath):
        compile_pattern(pattern)


def test_patterns_are_compiled_once() -> None:
    assert compile_pattern("/cached/*") is compile_pattern("/cached/*")
    assert normalise_pattern("/%61/**") == "/a/**"


def test_methods() -> None:
    assert normalise_method("get") == "GET"
    assert normalise_method("*") == "*"
    for bad in ("", "G ET", "GET\r\n", "1GET", "X" * 20):
        with pytest.raises(InvalidPath, match="HTTP method"):
            normalise_method(bad)


_pieces = st.sampled_from([*"ab.%/\\2eEfF5cC0;~-_ :@", "%2e", "%2E", "%2f", "%5c", "..",
                           "%00", "%25", "é", "\x00"])
_segment_text = st.lists(_pieces, max_size=8).map("".join)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_segment_text, max_size=6).map(lambda parts: "/" + "/".join(parts)))
def test_normalised_paths_have_no_dot_segments_or_empty_segments(raw: str) -> None:
    try:
        result = normalise_path(raw)
    except InvalidPath:
        return
    segments = result.split("/")[1:]
    assert "//" not in result
    assert all(s.split(";")[0] not in (".", "..") for s in segments)
    assert "%2F" not in result.upper() or "%252F" in result.upper()
    assert "\\" not in result
    assert all(ord(c) > 0x20 and ord(c) < 0x7F for c in result)
    assert normalise_path(result) == result  # idempotent


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_normaliser_never_crashes(raw: str) -> None:
    try:
        result = normalise_path(raw)
    except InvalidPath:
        return
    assert result.startswith("/") and "//" not in result
    assert normalise_path(result) == result
