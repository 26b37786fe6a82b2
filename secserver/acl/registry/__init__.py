"""Changing and reading the access-rights registry (synchronous, on a SQLAlchemy Session).

Used by the ``secserver acl`` / ``secserver consent`` commands and by the demo. Every
change is one transaction (committed before the function returns, rolled back on error)
that also appends an ``admin_events`` row (actor, time, action, object, before and after
as JSON) and bumps ``registry_version``, so running servers reload and the log can chain
the event. Read functions return plain JSON-ready dicts.

Errors are :class:`RegistryError` with a code (``UnknownObject``, ``AlreadyExists``,
``InUse``, ``InvalidValue``) and a message that names what exists instead.

One module per domain: :mod:`.members`, :mod:`.subsystems`, :mod:`.services` (with
endpoints), :mod:`.groups`, :mod:`.rights`, :mod:`.consents`, :mod:`.transfer` (export and
import); :mod:`.changes` (transactions, admin events, the error) and :mod:`.lookups`
(rows by identifier) underneath. Callers import from here.
"""

from secserver.acl.registry.changes import (
    Json,
    RegistryError,
    list_admin_events,
    registry_version,
)
from secserver.acl.registry.consents import (
    list_consents,
    record_consent,
    revoke_consent,
    revoke_consents,
)
from secserver.acl.registry.groups import (
    add_group,
    add_group_member,
    list_groups,
    remove_group,
    remove_group_member,
    show_group,
    update_group,
)
from secserver.acl.registry.members import (
    add_member,
    list_members,
    remove_member,
    show_member,
    update_member,
)
from secserver.acl.registry.rights import grant, list_rights, revoke, show_right
from secserver.acl.registry.services import (
    add_endpoint,
    add_service,
    list_endpoints,
    list_services,
    remove_endpoint,
    remove_service,
    show_endpoint,
    show_service,
    update_service,
)
from secserver.acl.registry.subsystems import (
    add_subsystem,
    list_subsystems,
    remove_subsystem,
    show_subsystem,
    update_subsystem,
)
from secserver.acl.registry.transfer import DOCUMENT_FORMAT, export_registry, import_registry

__all__ = [
    "DOCUMENT_FORMAT", "Json", "RegistryError", "add_endpoint", "add_group",
    "add_group_member", "add_member", "add_service", "add_subsystem", "export_registry",
    "grant", "import_registry", "list_admin_events", "list_consents", "list_endpoints",
    "list_groups", "list_members", "list_rights", "list_services", "list_subsystems",
    "record_consent", "registry_version", "remove_endpoint", "remove_group",
    "remove_group_member", "remove_member", "remove_service", "remove_subsystem", "revoke",
    "revoke_consent", "revoke_consents", "show_endpoint", "show_group", "show_member",
    "show_right", "show_service", "show_subsystem", "update_group", "update_member",
    "update_service", "update_subsystem",
]
