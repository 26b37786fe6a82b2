"""Register the demo's members, subsystems, services, endpoints, rights and first consent.

Through :mod:`secserver.acl.registry`, the code behind ``secserver acl`` and
``secserver consent``: every change is an admin event with the actor ``secserver-demo``.

TOYONO's node (consumer.toml) knows its own subsystem ELDERCARE, which may call out, and
serves ``resident-registry`` to OTTA/TAGS. OTTA's node (provider.toml) knows its own
subsystem TAGS and serves ``tag-locations``: personal data, so every call names the
resident and needs that resident's consent. TOYONO/ELDERCARE may read positions and tag
status, but not raise alerts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from secserver.acl import registry
from secserver.config import NodeConfig, read_secret
from secserver.db.engine import make_engine, session_factory
from secserver.db.migrate import upgrade
from secserver.demo.layout import (
    OTTA,
    OTTA_TAGS,
    RESIDENT_REGISTRY,
    TAG_LOCATIONS,
    TOYONO,
    TOYONO_ELDERCARE,
)
from secserver.demo.scenario import CONSENT_PURPOSE, CONSENTED_RESIDENT
from secserver.errors import ConfigError

ACTOR = "secserver-demo"
MEMBER_NAMES = {TOYONO: "Toyono Town", OTTA: "Otta Watch Tags Inc."}
#: (method, path pattern) of tag-locations, and whether TOYONO/ELDERCARE is granted it.
TAG_ENDPOINTS: tuple[tuple[str, str, bool], ...] = (
    ("GET", "/residents/*/locations", True),
    ("GET", "/tags/*/status", True),
    ("POST", "/tags/*/alerts", False),
    ("GET", "/tags/*/alerts", False),
)
CONSENT_VALIDITY = timedelta(days=365)


@contextmanager
def node_session(config: NodeConfig) -> Iterator[Session]:
    """A session on a node's database, after applying every migration."""
    url = config.database_url
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def subject_key(config: NodeConfig) -> bytes:
    key = read_secret(config.acl.subject_key_file, "[acl] subject_key_file")
    if not key:
        raise ConfigError([f"{config.path}: [acl] subject_key_file is not set or empty"])
    return key


def _members(session: Session) -> None:
    for member, name in MEMBER_NAMES.items():
        registry.add_member(session, ACTOR, member, name)


def register_toyono(session: Session, resident_registry_url: str) -> None:
    """TOYONO's node: ELDERCARE calls out; resident-registry is served to OTTA/TAGS."""
    _members(session)
    registry.add_subsystem(session, ACTOR, TOYONO_ELDERCARE, local=True, auth="none")
    registry.add_subsystem(session, ACTOR, OTTA_TAGS)
    registry.add_service(session, ACTOR, RESIDENT_REGISTRY, backend_url=resident_registry_url,
                         timeout=10.0)
    registry.grant(session, ACTOR, str(OTTA_TAGS), RESIDENT_REGISTRY)


def register_otta(session: Session, tag_locations_url: str) -> None:
    """OTTA's node: TAGS calls out; tag-locations (consent required) is served to TOYONO."""
    _members(session)
    registry.add_subsystem(session, ACTOR, OTTA_TAGS, local=True, auth="none")
    registry.add_subsystem(session, ACTOR, TOYONO_ELDERCARE)
    registry.add_service(session, ACTOR, TAG_LOCATIONS, backend_url=tag_locations_url,
                         timeout=10.0, requires_consent=True)
    for method, path, granted in TAG_ENDPOINTS:
        registry.add_endpoint(session, ACTOR, TAG_LOCATIONS, method, path)
        if granted:
            registry.grant(session, ACTOR, str(TOYONO_ELDERCARE), TAG_LOCATIONS,
                           method=method, path=path)


def record_consent(session: Session, key: bytes, resident: str, now: datetime) -> str:
    """Record ``resident``'s consent for TOYONO/ELDERCARE on tag-locations; describe it."""
    consent = registry.record_consent(
        session, ACTOR, key, resident, TOYONO_ELDERCARE, TAG_LOCATIONS, CONSENT_PURPOSE,
        valid_from=now, valid_until=now + CONSENT_VALIDITY, now=now)
    return (f"consent {consent.get('id')} of {resident} for {TOYONO_ELDERCARE} on "
            f"{TAG_LOCATIONS.code}, purpose {CONSENT_PURPOSE!r}, until "
            f"{(now + CONSENT_VALIDITY).date().isoformat()}")


def register_all(toyono: NodeConfig, otta: NodeConfig, resident_registry_url: str,
                 tag_locations_url: str, now: datetime) -> str:
    """Register everything on both nodes; record the first resident's consent."""
    with node_session(toyono) as session:
        register_toyono(session, resident_registry_url)
    with node_session(otta) as session:
        register_otta(session, tag_locations_url)
        return record_consent(session, subject_key(otta), CONSENTED_RESIDENT, now)
