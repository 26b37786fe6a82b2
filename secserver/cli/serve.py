"""``secserver serve --config FILE``: run one node until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click
import structlog

from secserver.cli.options import config_option, handle_errors, load_or_fail
from secserver.config import LoggingSection


def configure_logging(section: LoggingSection) -> None:
    """structlog to stderr: JSON in production, readable console lines in development."""
    level = getattr(logging, section.level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if section.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
        foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@click.command()
@config_option
@handle_errors
def serve(config_path: Path) -> None:
    """Run a node: client, server and admin listeners, until SIGTERM or SIGINT."""
    config = load_or_fail(config_path)
    configure_logging(config.logging)
    from secserver.node import run_node

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run_node(config))
