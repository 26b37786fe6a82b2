"""Entry point: a click group whose sub-commands are imported only when used.

Exit codes: 0 success, 1 failure (the message says why), 2 usage error.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from secserver import __version__

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "config": "secserver.cli.config_cmd:config",
    "db": "secserver.cli.db_cmd:db",
    "acl": "secserver.cli.acl:acl",
    "consent": "secserver.cli.consent:consent",
    "pki": "secserver.cli.pki:pki",
    "sign": "secserver.cli.sign:sign",
    "verify": "secserver.cli.sign:verify",
    "tsa": "secserver.cli.tsa:tsa",
    "audit": "secserver.cli.audit:audit",
    "serve": "secserver.cli.serve:serve",
    "demo": "secserver.cli.demo:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        available = [name for name, target in COMMANDS.items()
                     if importlib.util.find_spec(target.split(":")[0]) is not None]
        return sorted(available)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or cmd_name not in self.list_commands(ctx):
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="secserver")
def cli() -> None:
    """secserver: a security server for signed, access-checked, logged data exchange."""


def main() -> None:
    cli(prog_name="secserver")
