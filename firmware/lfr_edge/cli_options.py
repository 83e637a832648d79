"""Options every command of a CLI shares, accepted before or after the command.

`lfr-edge run --config X` and `lfr-edge --config X run` mean the same, and so do `lfr-provision handsets list
--root X` and `lfr-provision --root X handsets list`. argparse alone takes an option only where it is declared,
so each shared option is declared on the main parser (with its default) and again on every command's parser
with no default (argparse.SUPPRESS), so that leaving it out after the command never resets what was given
before it. A shared option that is required is checked once both places are parsed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Shared:
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)  # add_argument's keywords, `default` included
    required: bool = False  # required by the commands it is declared on (checked by `check_required`)

    @property
    def dest(self) -> str:
        return str(self.options.get("dest") or self.flags[-1].lstrip("-").replace("-", "_"))


def declare(parser: argparse.ArgumentParser, shared: Iterable[Shared], *, after_command: bool) -> None:
    """Declare `shared` on `parser`: the main parser (before the command) or a command's (after it)."""
    for option in shared:
        kwargs = dict(option.options)
        if after_command:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument(*option.flags, **kwargs)


def parent(shared: Iterable[Shared]) -> argparse.ArgumentParser:
    """A parent parser for commands: `add_parser(..., parents=[parent(SHARED)])`."""
    parser = argparse.ArgumentParser(add_help=False)
    declare(parser, shared, after_command=True)
    return parser


def check_required(
    parser: argparse.ArgumentParser, args: argparse.Namespace, shared: Iterable[Shared], command: str
) -> None:
    """Exit 2 naming every required shared option that was given neither before nor after `command`."""
    missing = [o.flags[-1] for o in shared if o.required and getattr(args, o.dest, None) is None]
    if missing:
        parser.error(f"{command}: the following arguments are required: {', '.join(missing)}")
