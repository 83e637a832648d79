"""`lfr-photos`: offline photo tools for a workstation (never run on a van).

`lfr-photos embed --list FILE --npz OUT` embeds the largest face of each listed photo; `lfr-photos summary
DIR` detects and embeds a folder and prints a readable summary. Both use the van's own pipeline and models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lfr_contracts.errors import ConfigError
from lfr_edge.cli_options import Shared, declare, parent
from lfr_edge.inference.base import BackendUnavailable
from lfr_edge.models import ModelError
from lfr_tools.photos import embed, summary

# `--config` before or after the command, as in every lfr-* tool (lfr_edge.cli_options).
GLOBAL_OPTIONS = (
    Shared(("--config",), {"type": Path, "default": None, "help": "a unit config for the models and vision sections"}),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfr-photos", description=__doc__)
    declare(parser, GLOBAL_OPTIONS, after_command=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embed.add_parser(sub, [parent(GLOBAL_OPTIONS)])
    summary.add_parser(sub, [parent(GLOBAL_OPTIONS)])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ConfigError, ModelError, BackendUnavailable) as exc:
        print(f"lfr-photos {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
