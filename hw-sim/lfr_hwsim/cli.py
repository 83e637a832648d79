"""`lfr-hwsim`: the hardware simulator (street scenes, beacon on a pty, the full van demo)."""

from __future__ import annotations

import argparse
import logging
import sys

from lfr_hwsim import demo


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["scene"]:
        from lfr_hwsim.scene_cli import scene_main

        return scene_main(args_in[1:])
    if args_in[:1] == ["beacon"]:
        from lfr_hwsim.beacon import main as beacon_main

        return beacon_main(args_in[1:])
    parser = argparse.ArgumentParser(prog="lfr-hwsim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(sub)
    sub.add_parser("scene", help="plan, render or preview a simulated street scene (lfr-hwsim scene -h)")
    sub.add_parser("beacon", help="run the simulated beacon on a pseudo-terminal (lfr-hwsim beacon -h)")
    args = parser.parse_args(args_in)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
