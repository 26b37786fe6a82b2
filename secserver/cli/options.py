"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from secserver.config import NodeConfig, load_config
from secserver.errors import ConfigError, SecServerError

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config", "config_path", required=True, envvar="SECSERVER_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Node configuration file (TOML); or set SECSERVER_CONFIG.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def fail(message: str) -> NoReturn:
    """Print an error to stderr and exit 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def fail_config(exc: ConfigError, what: str = "configuration") -> NoReturn:
    """Print ``error: WHAT is invalid:`` and each problem to stderr, and exit 1."""
    click.echo(f"error: {what} is invalid:", err=True)
    for problem in exc.problems:
        click.echo(f"  - {problem}", err=True)
    sys.exit(1)


def load_or_fail(path: Path) -> NodeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail_config(exc, f"configuration {path}")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))


def handle_errors(func: F) -> F:
    """Turn SecServerError into 'error: message' on stderr and exit code 1."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail_config(exc)
        except SecServerError as exc:
            fail(exc.message + (f" ({exc.detail})" if exc.detail else ""))

    return wrapper  # type: ignore[return-value]
