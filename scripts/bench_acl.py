#!/usr/bin/env python3
"""Benchmark the access decision: decisions per second and the median decision time.

Builds a snapshot with (by default) 10,000 rights and 1,000 REST endpoints, then times
``decide`` on a fixed mix of requests (allowed and denied; service-wide, endpoint, member,
group and consent rights; wildcard paths) against a baseline measured in the same run: a
plain dict lookup of (client, service) in a set of 10,000 pairs. Bounded in time.

    python scripts/bench_acl.py [--rights 10000] [--endpoints 1000] [--seconds 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from secserver.acl.decision import decide
from secserver.acl.snapshot import (
    ConsentEntry,
    EndpointEntry,
    RegistrySnapshot,
    RightEntry,
    ServiceEntry,
    subject_hash,
)
from secserver.identifiers import ClientId, ServiceId

NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = b"bench-subject-key"
Request = tuple[ClientId, ServiceId, str, str, str | None]


def build(rights_count: int, endpoints_count: int, seed: int) -> tuple[RegistrySnapshot,
                                                                         list[Request],
                                                                         set[tuple[str, str]]]:
    rng = random.Random(seed)
    endpoints_per_service = 10
    service_count = max(1, endpoints_count // endpoints_per_service)
    providers = [ClientId("JP-DEV", "GOV", f"CITY{i}", "DATA") for i in range(10)]
    services: list[ServiceEntry] = []
    endpoint_id = 0
    for i in range(service_count):
        sid = ServiceId(providers[i % len(providers)], f"svc{i}")
        eps = []
        for j in range(endpoints_per_service):
            endpoint_id += 1
            path = (f"/r{j}/*" if j % 3 == 0 else f"/r{j}/**" if j % 3 == 1
                    else f"/r{j}/items/*/detail")
            eps.append(EndpointEntry.create(endpoint_id, sid, "GET" if j % 2 else "*", path))
        services.append(ServiceEntry(sid, "http://127.0.0.1:9000", 5.0, i % 10 == 0, "digest",
                                     tuple(eps)))
    members = [ClientId("JP-DEV", "COM", f"CO{i}") for i in range(200)]
    clients = [ClientId(mem.instance, mem.member_class, mem.member_code, f"APP{j}")
               for mem in members for j in range(5)]
    groups = {f"group{g}": rng.sample(clients, 20) for g in range(20)}
    rights: list[RightEntry] = []
    pairs: set[tuple[str, str]] = set()
    seen: set[tuple[str, str, ServiceId, int | None]] = set()
    while len(rights) < rights_count:  # distinct: the registry holds one row per right
        entry = rng.choice(services)
        roll = rng.random()
        if roll < 0.8:
            kind, subject = "subsystem", str(rng.choice(clients))
        elif roll < 0.9:
            kind, subject = "member", str(rng.choice(members))
        else:
            kind, subject = "group", rng.choice(list(groups))
        endpoint = rng.choice(entry.endpoints) if rng.random() < 0.7 else None
        identity = (kind, subject, entry.id, None if endpoint is None else endpoint.id)
        if identity in seen:
            continue
        seen.add(identity)
        rights.append(RightEntry(len(rights) + 1, kind, subject, entry.id, endpoint, NOW,
                                 "bench"))
        pairs.add((subject, str(entry.id)))
    consents = [ConsentEntry(i + 1, subject_hash(KEY, f"citizen{i}"), rng.choice(clients),
                             rng.choice(services).id, "bench", NOW - timedelta(days=1),
                             None, None) for i in range(1000)]
    snapshot = RegistrySnapshot.build(services=services, groups=groups, rights=rights,
                                      consents=consents, version=1, subject_key=KEY)
    requests: list[Request] = []
    for _ in range(5000):
        if rng.random() < 0.6:  # a request that some right is about
            right = rng.choice(rights)
            service = right.service
            client = (ClientId.parse(right.subject + "/APP0") if right.subject_kind == "member"
                      else rng.choice(groups[right.subject]) if right.subject_kind == "group"
                      else ClientId.parse(right.subject))
        else:
            service = rng.choice(services).id
            client = rng.choice(clients)
        j = rng.randrange(endpoints_per_service)
        path = (f"/r{j}/{rng.randrange(1000)}" if j % 3 == 0
                else f"/r{j}/a/b/{rng.randrange(1000)}" if j % 3 == 1
                else f"/r{j}/items/{rng.randrange(1000)}/detail")
        data_subject = f"citizen{rng.randrange(2000)}" if rng.random() < 0.5 else None
        requests.append((client, service, rng.choice(("GET", "POST")), path, data_subject))
    return snapshot, requests, pairs


def load_time(snapshot: RegistrySnapshot, repeat: int = 3) -> float:
    """Seconds to load the same registry from a fresh SQLite database (median of runs)."""
    import tempfile

    from sqlalchemy import insert

    from secserver.acl import models as m
    from secserver.acl.snapshot import load_snapshot
    from secserver.db import migrate
    from secserver.db.engine import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrate.upgrade(url)
        engine = make_engine(url)
        members: dict[tuple[str, ...], int] = {}
        subsystems: dict[tuple[str, ...], int] = {}
        services: dict[tuple[str, ...], int] = {}
        groups: dict[str, int] = {}

        def member_id(c: ClientId) -> int:
            key = (c.instance, c.member_class, c.member_code)
            return members.setdefault(key, len(members) + 1)

        def subsystem_id(c: ClientId) -> int:
            member_id(c)
            return subsystems.setdefault(c.parts(), len(subsystems) + 1)

        for service in snapshot.services():
            subsystem_id(service.id.provider)
            services[service.id.parts()] = len(services) + 1
        for clients in snapshot.groups_by_client:
            subsystem_id(ClientId(*clients))
        for codes in snapshot.groups_by_client.values():
            for code in codes:
                groups.setdefault(code, len(groups) + 1)
        rights = [r for per in snapshot.rights_by_service.values() for lst in per.values()
                  for r in lst]
        for right in rights:
            if right.subject_kind == "subsystem":
                subsystem_id(ClientId.parse(right.subject))
            elif right.subject_kind == "member":
                member_id(ClientId.parse(right.subject))
        with engine.begin() as conn:
            conn.execute(insert(m.Member), [
                {"id": i, "instance": k[0], "member_class": k[1], "member_code": k[2],
                 "name": ""} for k, i in members.items()])
            conn.execute(insert(m.Subsystem), [
                {"id": i, "member_id": members[k[:3]], "code": k[3], "local": False,
                 "auth": "none", "allowlist": "[]"} for k, i in subsystems.items()])
            conn.execute(insert(m.Service), [
                {"id": services[s.id.parts()], "subsystem_id": subsystems[s.id.provider.parts()],
                 "code": s.id.code, "backend_url": s.backend_url, "timeout": s.timeout,
                 "requires_consent": s.requires_consent, "log_body": s.log_body}
                for s in snapshot.services()])
            conn.execute(insert(m.Endpoint), [
                {"id": e.id, "service_id": services[s.id.parts()], "method": e.method,
                 "path": e.path} for s in snapshot.services() for e in s.endpoints])
            conn.execute(insert(m.LocalGroup), [{"id": i, "code": c, "description": ""}
                                                for c, i in groups.items()])
            conn.execute(insert(m.GroupMember), [
                {"group_id": groups[c], "subsystem_id": subsystems[k]}
                for k, codes in snapshot.groups_by_client.items() for c in codes])
            conn.execute(insert(m.Right), [{
                "id": r.id, "subject_kind": r.subject_kind,
                "subject_subsystem_id": subsystems[ClientId.parse(r.subject).parts()]
                if r.subject_kind == "subsystem" else None,
                "subject_member_id": member_id(ClientId.parse(r.subject))
                if r.subject_kind == "member" else None,
                "subject_group_id": groups[r.subject] if r.subject_kind == "group" else None,
                "service_id": services[r.service.parts()],
                "endpoint_id": r.endpoint.id if r.endpoint else None,
                "granted_at": r.granted_at, "granted_by": r.granted_by} for r in rights])
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            with engine.connect() as conn:
                loaded = load_snapshot(conn)
            times.append(time.perf_counter() - start)
        engine.dispose()
        assert loaded.rights_count == snapshot.rights_count
        return statistics.median(times)


def measure(call: Callable[[int], object], count: int, seconds: float) -> tuple[float, float]:
    """(median ns per call measured one by one, calls per second over a tight loop)."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.monotonic() + seconds / 2
    i = 0
    while time.monotonic() < deadline and i < count * 20:
        for _ in range(1000):
            start = clock()
            call(i % count)
            samples.append(clock() - start)
            i += 1
    done = 0
    start_s = time.perf_counter()
    deadline = time.monotonic() + seconds / 2
    while time.monotonic() < deadline:
        for k in range(1000):
            call((done + k) % count)
        done += 1000
    rate = done / (time.perf_counter() - start_s)
    return statistics.median(samples), rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rights", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="time budget per measured function (default 4)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-db", action="store_true",
                        help="skip timing a snapshot load from SQLite")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 0.2), 60.0)

    built = time.perf_counter()
    snapshot, requests, pairs = build(args.rights, args.endpoints, args.seed)
    build_s = time.perf_counter() - built
    count = len(requests)
    allowed = sum(decide(snapshot, *req, NOW).allowed for req in requests)
    keys = [(str(c), str(s)) for c, s, _m, _p, _d in requests]

    def decision(i: int) -> object:
        client, service, method, path, subject = requests[i]
        return decide(snapshot, client, service, method, path, subject, NOW)

    def baseline(i: int) -> object:
        return keys[i] in pairs

    # Interleave the two so both see the same machine load.
    base_ns, base_rate = measure(baseline, count, args.seconds / 2)
    dec_ns, dec_rate = measure(decision, count, args.seconds)
    base_ns2, base_rate2 = measure(baseline, count, args.seconds / 2)
    base_ns, base_rate = min(base_ns, base_ns2), max(base_rate, base_rate2)
    load_s = None if args.no_db else load_time(snapshot)
    result = {
        "rights": snapshot.rights_count,
        "endpoints": sum(len(s.endpoints) for s in snapshot.services()),
        "requests": count, "allowed_share": round(allowed / count, 3),
        "snapshot_build_s": round(build_s, 3),
        "decision_median_us": round(dec_ns / 1000, 2),
        "decisions_per_s": round(dec_rate),
        "baseline_median_us": round(base_ns / 1000, 3),
        "baseline_per_s": round(base_rate),
        "ratio_median": round(dec_ns / base_ns, 1),
        "ratio_throughput": round(base_rate / dec_rate, 1),
        "target_median_us": 20.0,
        "snapshot_load_sqlite_s": None if load_s is None else round(load_s, 3),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"snapshot: {result['rights']} rights, {result['endpoints']} endpoints "
          f"(built in {build_s:.2f} s); {count} requests, {allowed / count:.0%} allowed")
    print(f"decide:   median {result['decision_median_us']} us, "
          f"{result['decisions_per_s']:,} decisions/s")
    print(f"baseline: median {result['baseline_median_us']} us, "
          f"{result['baseline_per_s']:,} lookups/s (dict lookup of (client, service))")
    print(f"ratio:    decide/baseline {result['ratio_median']}x by median, "
          f"{result['ratio_throughput']}x by throughput; target median < 20 us: "
          f"{'met' if dec_ns / 1000 < 20 else 'NOT met'}")
    if load_s is not None:
        print(f"reload:   load_snapshot of this registry from SQLite takes {load_s:.2f} s "
              "(what the watcher does after a change)")


if __name__ == "__main__":
    main()
