"""X-Road style identifiers: parse, format, percent-encode, validate. Pure.

Text forms (one ``/`` between parts, no encoding):

* client:  ``INSTANCE/CLASS/MEMBER[/SUBSYSTEM]``
* service: ``INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]``
* server:  ``INSTANCE/CLASS/MEMBER/SERVER``

Services always belong to a subsystem: with an optional subsystem *and* an optional
version, a five-part service id would be ambiguous.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote

from secserver.errors import InvalidIdentifier

MAX_PART_LENGTH = 64
MAX_INSTANCE_LENGTH = 32
# Characters that would confuse URLs, paths, headers or our text forms.
_FORBIDDEN = frozenset("/\\%:;?#[]@!$&'()*+,=\"<>`{}|^ ")


# Parts found valid before, with their length limit: every message parses and builds the
# same few identifiers many times (about 26 part checks per call on each node). Bounded: a
# flood of new names only stops the set from growing.
_VALID_PARTS: set[tuple[str, int]] = set()
_VALID_PARTS_MAX = 4096
# Text forms parsed before (valid ones only; the ids are frozen, so sharing them is safe).
# Bounded like ``_VALID_PARTS``.
_PARSED_CLIENTS: dict[str, ClientId] = {}
_PARSED_SERVICES: dict[str, ServiceId] = {}
_PARSED_MAX = 4096


def validate_part(value: str, role: str, *, max_length: int = MAX_PART_LENGTH) -> str:
    """Return ``value`` if it is a valid identifier part, else raise naming ``role``."""
    if isinstance(value, str) and (value, max_length) in _VALID_PARTS:
        return value
    if not isinstance(value, str) or value == "":
        raise InvalidIdentifier(f"{role} is empty")
    if len(value) > max_length:
        raise InvalidIdentifier(
            f"{role} {value[:20]!r}... is {len(value)} characters long; at most {max_length}"
        )
    if value in (".", ".."):
        raise InvalidIdentifier(f"{role} must not be {value!r}")
    if unicodedata.normalize("NFC", value) != value:
        raise InvalidIdentifier(f"{role} {value!r} is not in Unicode NFC form")
    for char in value:
        category = unicodedata.category(char)
        if char in _FORBIDDEN or category[0] in ("C", "Z"):
            raise InvalidIdentifier(
                f"{role} {value!r} contains the character {char!r} (U+{ord(char):04X}); "
                "allowed are letters, digits, '-', '_', '.' and '~'"
            )
    if len(_VALID_PARTS) < _VALID_PARTS_MAX:
        _VALID_PARTS.add((value, max_length))
    return value


def _split(text: str, kind: str, allowed_counts: tuple[int, ...]) -> list[str]:
    if not isinstance(text, str) or text == "":
        raise InvalidIdentifier(f"{kind} id is empty")
    if len(text) > 512:
        raise InvalidIdentifier(f"{kind} id is longer than 512 characters")
    parts = text.split("/")
    if len(parts) not in allowed_counts:
        shapes = {
            "client": "INSTANCE/CLASS/MEMBER[/SUBSYSTEM]",
            "service": "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]",
            "server": "INSTANCE/CLASS/MEMBER/SERVER",
        }
        raise InvalidIdentifier(
            f"{kind} id {text!r} has {len(parts)} parts; expected {shapes[kind]}"
        )
    return parts


@dataclass(frozen=True)
class ClientId:
    """A member (``subsystem is None``) or one of its subsystems."""

    instance: str
    member_class: str
    member_code: str
    subsystem: str | None = None

    def __post_init__(self) -> None:
        validate_part(self.instance, "instance", max_length=MAX_INSTANCE_LENGTH)
        validate_part(self.member_class, "member class")
        validate_part(self.member_code, "member code")
        if self.subsystem is not None:
            validate_part(self.subsystem, "subsystem code")

    @classmethod
    def parse(cls, text: str) -> ClientId:
        if cls is ClientId and type(text) is str:
            known = _PARSED_CLIENTS.get(text)
            if known is not None:
                return known
        parts = _split(text, "client", (3, 4))
        client = cls(*parts)
        if cls is ClientId and len(_PARSED_CLIENTS) < _PARSED_MAX:
            _PARSED_CLIENTS[text] = client
        return client

    @property
    def member(self) -> ClientId:
        """The member this client belongs to (itself when it is a member)."""
        if self.subsystem is None:
            return ClientId(self.instance, self.member_class, self.member_code)
        member: ClientId | None = self.__dict__.get("_member")
        if member is None:
            member = ClientId(self.instance, self.member_class, self.member_code)
            object.__setattr__(self, "_member", member)  # fields are frozen: built once
        return member

    @property
    def is_subsystem(self) -> bool:
        return self.subsystem is not None

    def parts(self) -> tuple[str, ...]:
        base = (self.instance, self.member_class, self.member_code)
        return base if self.subsystem is None else (*base, self.subsystem)

    def __str__(self) -> str:
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = "/".join(self.parts())
            object.__setattr__(self, "_text", text)  # fields are frozen: built once
        return text

    def url_path(self) -> str:
        return "/".join(quote(p, safe="") for p in self.parts())


@dataclass(frozen=True)
class ServiceId:
    """A service of a provider subsystem, optionally versioned."""

    provider: ClientId
    code: str
    version: str | None = None

    def __post_init__(self) -> None:
        if not self.provider.is_subsystem:
            raise InvalidIdentifier(
                f"service {self.code!r} must belong to a subsystem, not to member {self.provider}"
            )
        validate_part(self.code, "service code")
        if self.version is not None:
            validate_part(self.version, "service version")

    @classmethod
    def parse(cls, text: str) -> ServiceId:
        if cls is ServiceId and type(text) is str:
            known = _PARSED_SERVICES.get(text)
            if known is not None:
                return known
        parts = _split(text, "service", (5, 6))
        provider = ClientId(*parts[:4])
        service = cls(provider, parts[4], parts[5] if len(parts) == 6 else None)
        if cls is ServiceId and len(_PARSED_SERVICES) < _PARSED_MAX:
            _PARSED_SERVICES[text] = service
        return service

    def parts(self) -> tuple[str, ...]:
        base = (*self.provider.parts(), self.code)
        return base if self.version is None else (*base, self.version)

    def __str__(self) -> str:
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = "/".join(self.parts())
            object.__setattr__(self, "_text", text)  # fields are frozen: built once
        return text

    def without_version(self) -> ServiceId:
        return ServiceId(self.provider, self.code)

    def url_path(self) -> str:
        """The REST ``/r1/`` form: five percent-encoded parts (no version)."""
        path: str | None = self.__dict__.get("_url_path")
        if path is None:
            path = "/".join(quote(p, safe="") for p in (*self.provider.parts(), self.code))
            object.__setattr__(self, "_url_path", path)  # fields are frozen: built once
        return path


@dataclass(frozen=True)
class ServerId:
    """A security server of a member."""

    owner: ClientId
    code: str

    def __post_init__(self) -> None:
        if self.owner.is_subsystem:
            raise InvalidIdentifier(f"security server owner {self.owner} must be a member")
        validate_part(self.code, "server code")

    @classmethod
    def parse(cls, text: str) -> ServerId:
        parts = _split(text, "server", (4,))
        return cls(ClientId(*parts[:3]), parts[3])

    def parts(self) -> tuple[str, ...]:
        return (*self.owner.parts(), self.code)

    def __str__(self) -> str:
        return "/".join(self.parts())


def decode_url_part(raw: str, role: str) -> str:
    """Percent-decode one URL segment strictly (UTF-8, no stray '%') and validate it."""
    if "%" in raw:
        chunks = raw.split("%")
        for chunk in chunks[1:]:
            if len(chunk) < 2 or any(c not in "0123456789abcdefABCDEF" for c in chunk[:2]):
                raise InvalidIdentifier(f"{role} {raw!r} has a malformed percent-encoding")
    try:
        value = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidIdentifier(f"{role} {raw!r} is not valid UTF-8 once decoded") from exc
    return validate_part(value, role)


def parse_rest_service_path(path: str) -> tuple[ServiceId, str]:
    """Split the raw path after ``/r1/`` into a service id and the remaining raw path.

    ``path`` is as sent (still percent-encoded); the remainder keeps its encoding and
    starts with ``/`` (or is ``""``).
    """
    segments = path.split("/")
    if len(segments) < 5:
        raise InvalidIdentifier(
            f"REST path {path!r} does not name a service; expected "
            "/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/path]"
        )
    roles = ("instance", "member class", "member code", "subsystem code", "service code")
    parts = [decode_url_part(seg, role) for seg, role in zip(segments[:5], roles, strict=True)]
    rest = "/".join(segments[5:])
    provider = ClientId(*parts[:4])
    return ServiceId(provider, parts[4]), ("/" + rest if len(segments) > 5 else "")
