"""`lfr-edge`: the unit's command line (run the daemon, self-test, audit).

Global options (`--config`, `-v`) are accepted before or after the command, so the unit file's
`lfr-edge run --config FILE` and `lfr-edge --config FILE run` mean the same.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lfr_contracts.camera import CameraError
from lfr_contracts.crypto import CryptoError
from lfr_contracts.errors import ConfigError
from lfr_contracts.layout import DEFAULT_CONFIG
from lfr_edge import __version__
from lfr_edge.audit.cli import add_audit_parser
from lfr_edge.audit.log import AuditError
from lfr_edge.config import load_config_or_defaults
from lfr_edge.daemon import selftest
from lfr_edge.inference.base import BackendUnavailable
from lfr_edge.models import ModelError
from lfr_edge.watchlist.lifecycle import LifecycleError


def global_options(after_command: bool) -> argparse.ArgumentParser:
    """The options every command takes. Given after the command (`after_command`), an option left out must
    not reset what was given before it, hence no defaults there."""
    parent = argparse.ArgumentParser(add_help=False)
    if after_command:
        parent.add_argument(
            "--config", type=Path, default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG})"
        )
        parent.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    else:
        parent.add_argument("--config", type=Path, default=None, help=f"config file (default {DEFAULT_CONFIG})")
        parent.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr-edge", description=__doc__, parents=[global_options(after_command=False)]
    )
    parser.add_argument("--version", action="version", version=f"lfr-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    after = [global_options(after_command=True)]
    run = sub.add_parser("run", help="run the unit daemon (under systemd: Type=notify)", parents=after)
    run.set_defaults(func=_run)
    add_audit_parser(sub, parents=after)
    selftest.add_parser(sub, parents=after)
    return parser


def _run(args: argparse.Namespace) -> int:
    from lfr_edge.daemon.run import run_daemon

    return run_daemon(load_config_or_defaults(args.config), args.config)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except (ConfigError, ModelError, BackendUnavailable, CameraError, CryptoError, AuditError, LifecycleError) as exc:
        print(f"lfr-edge {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the config names is missing or not ours: say which, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"lfr-edge {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
