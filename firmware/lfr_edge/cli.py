"""`lfr-edge`: the unit's command line (run the daemon, embed photos, self-test, audit, demo)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lfr_edge import __version__, demo_photos, embed_cmd
from lfr_edge.camera.base import CameraError
from lfr_edge.config import Config, ConfigError, load_config
from lfr_edge.crypto import CryptoError
from lfr_edge.daemon import selftest
from lfr_edge.daemon.audit import AuditError, add_audit_parser
from lfr_edge.inference.base import BackendUnavailable
from lfr_edge.models import ModelError

DEFAULT_CONFIG = Path("/etc/lfr-edge/config.toml")


def load_cli_config(args: argparse.Namespace) -> Config:
    """The --config file if given (or the unit's default one if it exists), else built-in defaults."""
    path: Path | None = getattr(args, "config", None)
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(path) if path is not None else Config()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfr-edge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lfr-edge {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="config file (default /etc/lfr-edge/config.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the unit daemon (under systemd: Type=notify)")
    run.set_defaults(func=_run)
    embed_cmd.add_parser(sub)
    demo_photos.add_parser(sub)
    add_audit_parser(sub)
    selftest.add_parser(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    from lfr_edge.daemon.run import run_daemon

    return run_daemon(load_cli_config(args), getattr(args, "config", None))


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
    except (ConfigError, ModelError, BackendUnavailable, CameraError, CryptoError, AuditError) as exc:
        print(f"lfr-edge {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
