"""Orchestration of ``secserver demo``: set up, start, run the scenario, verify, stop.

Order: files (PKI, secrets, configurations, directory) -> registry on both nodes ->
development TSA -> the two sample services -> both nodes (``secserver serve``) -> the
scenario -> stop the nodes (a graceful stop closes the log with a checkpoint) ->
``secserver audit verify`` on both nodes when that command exists -> stop the rest.
Children are always stopped, also on Ctrl-C and errors.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from secserver.config import NodeConfig, load_config
from secserver.demo.layout import HOST, Layout, NodeFiles, Ports, write_layout
from secserver.demo.processes import DemoProcessError, ProcessGroup, http_status
from secserver.demo.registration import node_session, record_consent, register_all, subject_key
from secserver.demo.scenario import Outcome, Step, render_step, run_scenario
from secserver.errors import SecServerError

START_TIMEOUT = 60.0
#: Free ports are chosen before the children bind them; another program may take one in
#: between. Then everything is set up again with new ports, at most this many times.
PORT_ATTEMPTS = 3
#: Entries ``secserver demo`` creates in its directory; only these are replaced on a rerun.
DEMO_ENTRIES = ("consumer.toml", "provider.toml", "directory.toml", "pki", "secrets", "data",
                "logs")

Echo = Callable[[str], None]


class DemoError(SecServerError):
    code = "DemoFailed"
    http_status = 500


@dataclass(frozen=True)
class DemoResult:
    steps: tuple[Step, ...]
    directory: Path

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.outcome.ok for s in self.steps)


def prepare_directory(root: Path) -> None:
    """Use ``root`` for the demo: empty, or a previous demo's directory (then replaced)."""
    if root.exists() and not root.is_dir():
        raise DemoError(f"{root} exists and is not a directory")
    if root.exists():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in DEMO_ENTRIES)
        if foreign:
            raise DemoError(f"{root} holds files the demo did not make "
                            f"({', '.join(foreign[:5])}); give an empty or new directory")
        running = [name for name in ("consumer.toml", "provider.toml")
                   if _node_answers(root / name)]
        if running:
            raise DemoError(f"the node of {root / running[0]} is still running (another "
                            "secserver demo --keep-running?); stop it first")
        for name in DEMO_ENTRIES:
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def port_was_taken(log_dir: Path) -> bool:
    """Whether a child's log says its port was already in use."""
    for log in log_dir.glob("*.log"):
        text = log.read_text(encoding="utf-8", errors="replace").lower()
        if "address already in use" in text or "errno 98" in text:
            return True
    return False


def _node_answers(config_file: Path) -> bool:
    """Whether the admin port named in a previous demo's configuration still answers."""
    try:
        admin = tomllib.loads(config_file.read_text(encoding="utf-8")).get("admin", {})
        port = int(admin.get("port", 0))
    except (OSError, ValueError, AttributeError, TypeError, tomllib.TOMLDecodeError):
        return False
    return 0 < port < 65536 and http_status(HOST, port, "/healthz") is not None


def _command_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def start_everything(group: ProcessGroup, layout: Layout, echo_progress: Echo) -> None:
    """Start TSA, sample services and both nodes; return once every one answers."""
    ports = layout.ports
    echo_progress("starting the development TSA and the two sample services")
    tsa = group.start("tsa", ["-m", "secserver", "tsa", "serve", "--dir", str(layout.pki),
                              "--port", str(ports.tsa)], layout.root)
    tags = group.start("tag-locations", ["-m", "secserver.examples.tag_locations",
                                         "--port", str(ports.tag_locations)], layout.root)
    registry = group.start("resident-registry", ["-m", "secserver.examples.resident_registry",
                                                 "--port", str(ports.resident_registry)],
                           layout.root)
    group.wait_http(tags, HOST, ports.tag_locations, "/", START_TIMEOUT)
    group.wait_http(registry, HOST, ports.resident_registry, "/?wsdl", START_TIMEOUT)
    group.wait_http(tsa, HOST, ports.tsa, "/", START_TIMEOUT, ok=range(100, 600))
    echo_progress("starting both security servers (secserver serve)")
    nodes = [(node, group.start(f"node-{node.data_name}",
                                ["-m", "secserver", "serve", "--config",
                                 str(layout.config_path(node))], layout.root))
             for node in (layout.toyono, layout.otta)]
    for node, child in nodes:
        group.wait_http(child, HOST, node.admin_port, "/healthz", START_TIMEOUT)


def audit_verify(layout: Layout, node: NodeFiles) -> Outcome:
    """Run ``secserver audit verify --json`` on one node's log (the node must be stopped)."""
    command = [sys.executable, "-m", "secserver", "audit", "verify", "--json", "--config",
               str(layout.config_path(node))]
    result = subprocess.run(command, capture_output=True, text=True, cwd=layout.root,
                            timeout=120, check=False)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        return Outcome(False, f"{node.server}: exit {result.returncode}: "
                              + " | ".join(lines[-5:]))
    counts = (f"{report.get('records')} records, {report.get('messages')} messages, "
              f"{report.get('checkpoints')} checkpoints, {report.get('timestamps_checked')} "
              f"timestamps, {report.get('message_signatures_checked')} message signatures")
    problems = [str(p) for p in report.get("problems", [])]
    if result.returncode != 0 or not report.get("ok") or problems:
        return Outcome(False, f"{node.server}: {counts}; problems: "
                              + "; ".join(problems[:5]))
    return Outcome(True, f"{node.server}: {counts}, all verified")


def stopped(name: str, returncode: int) -> Outcome:
    if returncode != 0:
        return Outcome(False, f"{name} exited with code {returncode} when stopped")
    return Outcome(True, f"{name} stopped cleanly")


def urls(layout: Layout) -> list[str]:
    p = layout.ports
    return [
        f"TOYONO SS1 (consumer.toml): client http://{HOST}:{p.toyono_client}/  "
        f"server https://{HOST}:{p.toyono_server}/  admin http://{HOST}:{p.toyono_admin}/",
        f"OTTA SS1 (provider.toml):   client http://{HOST}:{p.otta_client}/  "
        f"server https://{HOST}:{p.otta_server}/  admin http://{HOST}:{p.otta_admin}/",
        f"development TSA:            {layout.tsa_url}",
        f"OTTA tag-locations (REST):  {layout.tag_locations_url}",
        f"TOYONO resident-registry:   {layout.resident_registry_url}?wsdl",
    ]


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM and SIGINT as Ctrl-C, so children are stopped on either.

    SIGINT is set explicitly: a shell starting the demo in the background ignores it.
    """
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handler)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


def _stop_quietly(group: ProcessGroup) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        group.stop_all()
    finally:
        signal.signal(signal.SIGINT, previous)


def run_demo(directory: Path | None, *, keep_running: bool, echo: Echo,
             echo_progress: Echo, wait_forever: Callable[[], None] | None = None) -> DemoResult:
    """Run the whole demo; returns the steps (``result.ok`` when all behaved as expected).

    ``directory`` None: a temporary directory, removed afterwards. Raises
    :class:`SecServerError` when the set-up fails (then nothing is left running).
    """
    temporary = directory is None
    root = Path(tempfile.mkdtemp(prefix="secserver-demo-")) if directory is None \
        else directory.resolve()
    ok = False
    try:
        with _signals_as_interrupt():
            result = _run(root, keep_running, echo, echo_progress, wait_forever)
        ok = result.ok
        return result
    finally:
        if temporary:
            if not ok:  # the logs are about to go: show their ends
                for log in sorted((root / "logs").glob("*.log")):
                    echo_progress(f"last lines of {log.name}:\n{log_tail(log)}")
                echo_progress("run `secserver demo --dir DIR` to keep every file and log")
            shutil.rmtree(root, ignore_errors=True)


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


def _run(root: Path, keep_running: bool, echo: Echo, echo_progress: Echo,
         wait_forever: Callable[[], None] | None) -> DemoResult:
    started = time.monotonic()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        prepare_directory(root)
        echo_progress(f"setting up in {root}: development PKI, node configurations, "
                      "directory")
        layout = write_layout(root, Ports.free())
        toyono: NodeConfig = load_config(layout.consumer_config)
        otta: NodeConfig = load_config(layout.provider_config)
        first_consent = register_all(toyono, otta, layout.resident_registry_url,
                                     layout.tag_locations_url, datetime.now(UTC))
        group = ProcessGroup(layout.logs)
        try:
            start_everything(group, layout, echo_progress)
        except DemoProcessError:
            _stop_quietly(group)
            if attempt == PORT_ATTEMPTS or not port_was_taken(layout.logs):
                raise
            echo_progress("another program took one of the chosen ports; starting again "
                          "with new ones")
            continue
        except BaseException:
            _stop_quietly(group)
            raise
        break
    echo("secserver demo: members JP-DEV/GOV/TOYONO and JP-DEV/COM/OTTA on 127.0.0.1")
    echo(f"  directory {root}")
    echo(f"  registered: {first_consent}")
    steps: list[Step] = []
    try:
        echo(f"  everything up after {time.monotonic() - started:.1f} s")

        def consent(resident: str) -> str:
            with node_session(otta) as session:
                return record_consent(session, subject_key(otta), resident, datetime.now(UTC))

        def show(step: Step) -> None:
            echo(render_step(step))

        steps.extend(run_scenario(layout.ports.toyono_client, layout.ports.otta_client,
                                  consent, show))
        if keep_running:
            echo("everything keeps running until Ctrl-C:")
            for line in urls(layout):
                echo(f"  {line}")
            if wait_forever is not None:
                try:
                    wait_forever()
                except KeyboardInterrupt:
                    echo_progress("interrupted: stopping")
        echo_progress("stopping the security servers")
        stops = [stopped(child.name, group.stop(child))
                 for child in [c for c in group.children if c.name.startswith("node-")]]
        audits = ([audit_verify(layout, node) for node in (layout.toyono, layout.otta)]
                  if _command_exists("secserver.cli.audit") else [])
        failures = [o.summary for o in stops + audits if not o.ok]
        shown = audits or stops
        step = Step(6, "audit log verified" if audits else "clean stop",
                    "stop both nodes (SIGTERM), then secserver audit verify on both",
                    "both nodes exit 0; chain, checkpoints, timestamps and signatures verify",
                    Outcome(not failures, "; ".join(failures) or shown[0].summary),
                    () if failures else tuple(o.summary for o in shown[1:]))
        steps.append(step)
        echo(render_step(step))
    finally:
        _stop_quietly(group)
    result = DemoResult(tuple(steps), root)
    passed = sum(1 for s in steps if s.outcome.ok)
    elapsed = time.monotonic() - started
    if result.ok:
        echo(f"demo passed: {passed} of {len(steps)} steps behaved as expected "
             f"({elapsed:.1f} s)")
    else:
        failed = ", ".join(str(s.number) for s in steps if not s.outcome.ok)
        echo(f"demo FAILED: step(s) {failed} did not behave as expected "
             f"(process logs in {layout.logs})")
    return result
