"""`lfr-edge`: the unit's command line (run the daemon).

Global options (`--config`, `--root`, `-v`) are accepted before or after the command, so the unit file's
`lfr-edge run --config FILE` and `lfr-edge --config FILE run` mean the same. `--root FOLDER` runs a unit
provisioned into a folder (`lfr-provision init --root FOLDER`, bench mode): its config is
FOLDER/etc/lfr-edge/config.toml, and every file the config names must lie inside FOLDER.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from lfr_contracts.camera import CameraError
from lfr_contracts.crypto import CryptoError
from lfr_contracts.errors import ConfigError
from lfr_contracts.layout import DEFAULT_CONFIG, UnitLayout
from lfr_edge import __version__
from lfr_edge.audit.log import AuditError
from lfr_edge.cli_options import Shared, declare, parent
from lfr_edge.config import Config, load_config, load_config_or_defaults
from lfr_edge.inference.base import BackendUnavailable
from lfr_edge.models import ModelError
from lfr_edge.watchlist.lifecycle import LifecycleError

GLOBAL_OPTIONS = (
    Shared(("--config",), {"type": Path, "default": None, "help": f"config file (default {DEFAULT_CONFIG})"}),
    Shared(
        ("--root",),
        {
            "type": Path,
            "default": None,
            "help": "the unit's root file system (default /); a folder for a unit provisioned on a desk",
        },
    ),
    Shared(("-v", "--verbose"), {"action": "store_true", "default": False, "help": "debug logging"}),
)


def global_options(after_command: bool) -> argparse.ArgumentParser:
    """The options every command takes, as a parent parser (after the command: no defaults)."""
    if after_command:
        return parent(GLOBAL_OPTIONS)
    parser = argparse.ArgumentParser(add_help=False)
    declare(parser, GLOBAL_OPTIONS, after_command=False)
    return parser


def resolve_config(args: argparse.Namespace) -> Path | None:
    """--config as given; else the root's own config with --root; else None (the default file, if any)."""
    if args.config is not None:
        return Path(args.config)
    if args.root is not None:
        return UnitLayout(Path(args.root).absolute()).config
    return None


def check_inside_root(cfg: Config, root: Path, config_path: Path) -> None:
    """Under --root, every file of the unit is in the root: a bench unit never reads or writes the host's."""
    root = root.absolute()
    if root == Path("/"):
        return
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(value):
            continue  # the cameras: their URIs (devices, streams, recordings) are used as written
        for item in dataclasses.fields(value):
            path = getattr(value, item.name)
            if isinstance(path, str) and section.name == "beacon" and item.name == "port":
                path = Path(path)
            if isinstance(path, Path) and path.is_absolute() and not path.is_relative_to(root):
                raise ConfigError(
                    f"{config_path}: {section.name}.{item.name} = {path} is outside --root {root}; a unit "
                    f"provisioned in a folder uses only that folder (`lfr-provision init --root {root}` writes "
                    "such a config)"
                )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr-edge", description=__doc__, parents=[global_options(after_command=False)]
    )
    parser.add_argument("--version", action="version", version=f"lfr-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    after = [global_options(after_command=True)]
    run = sub.add_parser("run", help="run the unit daemon (under systemd: Type=notify)", parents=after)
    run.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    from lfr_edge.daemon.run import run_daemon

    return run_daemon(load_config_or_defaults(args.config), args.config)


def _prepare(args: argparse.Namespace) -> None:
    """Settle --config from --root and check that the config stays inside the root. A config that does not
    load is left for the command to report."""
    args.config = resolve_config(args)
    if args.root is None or args.config is None:
        return
    try:
        cfg = load_config(args.config)
    except ConfigError:
        return
    check_inside_root(cfg, Path(args.root), args.config)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _prepare(args)
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
