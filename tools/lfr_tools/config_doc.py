"""docs/config.md, written from the config's own declarations: every key's type, default, range and purpose.

The sections come from `lfr_edge.config` (each field declared with `setting()`), the camera table from
`lfr_contracts.camera.CameraConfig`, and each camera source's options from the `OPTIONS` table beside the
source, found through the `lfr_edge.camera_sources` entry points. So the reference cannot drift from what
the loader enforces; tests/test_config.py fails when the committed file is stale.

    .venv/bin/python -m lfr_tools.config_doc --out docs/config.md    # regenerate
    .venv/bin/python -m lfr_tools.config_doc --check docs/config.md  # exit 1 when stale
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from lfr_contracts.camera import CameraConfig, SourceOption
from lfr_contracts.settings import Setting, Text, setting_of
from lfr_edge import config
from lfr_edge.camera import available_sources

REGENERATE = ".venv/bin/python -m lfr_tools.config_doc --out docs/config.md"
CHECK = ".venv/bin/python -m lfr_tools.config_doc --check docs/config.md"

INTRO = f"""# Configuration reference

<!-- Generated from the field declarations: do not edit by hand. Regenerate with `{REGENERATE}`;
`{CHECK}` (run by tests/test_config.py) fails when this file is stale. -->

A unit reads one TOML file, `/etc/lfr-edge/config.toml` (`lfr-provision init` writes it; `lfr-edge run
--config FILE` and `lfr-provision selftest --config FILE` read another). It is checked once, at start and at each
reload: an unknown key, a value of the wrong type or one outside its range stops the daemon with exit status 2
and a message naming the key. Every key is optional and has the default below.

- Numbers must be finite: `nan` and `inf` are refused everywhere. An integer key takes no fraction and no
  `true`/`false`; a number key takes an integer too.
- Text holds no control characters (NUL, newline, escape...). Identifiers (the unit's and the cameras' names)
  are 1-64 letters, digits, `-` or `_`: they become MQTT topic levels.
- Paths are file paths; a relative one is taken from the config file's folder, and `~` is the service user's
  home. Secrets (keys) are always paths, never inline values.
- The file is at most {config.MAX_CONFIG_BYTES >> 20} MiB, with tables and arrays nested at most
  {config.MAX_VALUE_DEPTH} deep.
"""


def type_name(hint: Any, declared: Setting) -> str:
    """How the reference names a key's type."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(f'`"{v}"`' for v in typing.get_args(hint))
    if hint is bool:
        return "boolean"
    if hint is int:
        return "integer"
    if hint is float:
        return "number"
    if hint is Path:
        return "path"
    if typing.get_origin(hint) is dict:
        return "table"
    if hint is str:
        return "identifier" if declared.text is Text.IDENTIFIER else "string"
    return str(hint)


def literal(value: Any) -> str:
    """A default as it would be written in TOML."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        text = str(value).replace(str(config.REPO_ROOT), "<checkout>")
        return f'`"{text}"`'
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if isinstance(value, list):
        return f"`{value}`".replace("'", '"')
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"`{value:_}`"
    return f"`{value}`"


def rule(declared: Setting) -> str:
    """The range column: a number's range, a text field's rule."""
    if declared.range is not None:
        return declared.range.describe()
    if declared.text is Text.ANY:
        return ""
    return str(declared.text.value)


def fields_table(cls: type[Any]) -> Iterator[str]:
    hints = typing.get_type_hints(cls)
    yield "| key | type | default | range | what it does |"
    yield "| --- | --- | --- | --- | --- |"
    for f in dataclasses.fields(cls):
        declared = setting_of(f)
        default = f.default_factory() if callable(f.default_factory) else f.default
        cells = (f"`{f.name}`", type_name(hints[f.name], declared), literal(default), rule(declared), declared.help)
        yield "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


_OPTION_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", list: "array"}


def options_table(options: dict[str, SourceOption]) -> Iterator[str]:
    if not options:
        yield "No options."
        return
    yield "| option | type | default | range | what it does |"
    yield "| --- | --- | --- | --- | --- |"
    for name, declared in options.items():
        kinds = " or ".join(_OPTION_TYPES[t] for t in declared.types if not (t is int and float in declared.types))
        span = declared.range.describe() if declared.range is not None else ""
        default = literal(declared.default) if declared.default != "" else "unset"
        cells = (f"`{name}`", kinds, default, span, declared.help)
        yield "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def source_tables() -> Iterator[str]:
    """Each registered camera source: its summary line and its OPTIONS table."""
    for name, entry in sorted(available_sources().items()):
        module = inspect.getmodule(entry.load())
        summary = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ")
        options: dict[str, SourceOption] = getattr(module, "OPTIONS", {})
        yield f'### `source = "{name}"`'
        yield ""
        yield f"{summary} (`{entry.value.split(':')[0]}`)"
        yield ""
        yield from options_table(options)
        yield ""


def markdown() -> str:
    lines = [INTRO]
    hints = typing.get_type_hints(config.Config)
    for f in dataclasses.fields(config.Config):
        if f.name == "cameras":
            lines += _cameras()
        else:
            cls = hints[f.name]
            lines += [f"## `[{f.name}]`", "", inspect.getdoc(cls) or "", "", *fields_table(cls), ""]
    lines += ["## Rules between keys", "", *(f"- {r}" for r in config.RULES_BETWEEN_KEYS), ""]
    return "\n".join(lines).rstrip() + "\n"


def _cameras() -> list[str]:
    return [
        "## `[[cameras]]`",
        "",
        (inspect.getdoc(CameraConfig) or "") + " A unit needs at least one; offline tools need none.",
        "",
        *fields_table(CameraConfig),
        "",
        "Each source checks its own `options` table: an unknown option, a wrong type or a value out of range is",
        "refused naming `cameras[NAME].options.KEY`.",
        "",
        *source_tables(),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfr_tools.config_doc", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path, help="write the reference to this file")
    action.add_argument("--check", type=Path, help="exit 1 when this file is not what --out would write")
    args = parser.parse_args(argv)
    text = markdown()
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
        return 0
    current = args.check.read_text(encoding="utf-8") if args.check.is_file() else ""
    if current != text:
        print(f"{args.check} is stale: regenerate it with `{REGENERATE}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
