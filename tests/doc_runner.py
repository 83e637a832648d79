"""Run the commands of the documentation as written: the README's deployment table, docs/broker.md, the bench
section of docs/board-setup.md (tests/test_docs.py).

The documents give commands in ```sh blocks and in the deployment table's backticks. A block whose lines are
all `NAME=value` is a page's values: a value already set (by an earlier page, or by the test standing in
for the technician's site) is kept, as a reader who set it already would. A block after the comment
`<!-- not run by the tests ... -->` needs hardware or a host's systemd and is listed, not run. A command
that runs until stopped (a broker, the daemon, a listener) is started in the background and waited for
until its output shows it is ready; what a person would read off a screen (the pairing code, an alert's
id) is captured from that output and put where the document writes it as a placeholder (CODE, ALERT_ID).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SKIP_MARKER = "<!-- not run by the tests"
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
PROGRAMS = ("lfr-", "mosquitto", "systemctl", "kill ", "ln ", "cp ", "mkdir ", "cd ", "rm ")
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    source: str  # file:line of the block's first command
    heading: str  # the section it is in
    headings: tuple[str, ...]  # every heading before it, in order
    lines: tuple[str, ...]  # logical lines (continuations joined), comments and blank lines dropped
    runnable: bool


def _logical_lines(raw: Sequence[str]) -> list[str]:
    lines, current = [], ""
    for line in raw:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        stripped = current.strip()
        current = ""
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def sh_blocks(path: Path) -> list[Block]:
    """Every ```sh block of a markdown file, in order, with the heading it is under."""
    text = path.read_text().splitlines()
    blocks, heading, headings, i = [], "", [], 0
    while i < len(text):
        line = text[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            headings.append(heading)
        if line.strip() == "```sh":
            start = i + 1
            end = next(j for j in range(start, len(text)) if text[j].strip() == "```")
            skipped = i > 0 and text[i - 1].strip().startswith(SKIP_MARKER)
            name = f"{path.name}:{start + 1}"
            lines = tuple(_logical_lines(text[start:end]))
            blocks.append(Block(name, heading, tuple(headings), lines, not skipped))
            i = end
        i += 1
    return blocks


def section(blocks: Sequence[Block], starts: str, ends: str | None = None) -> list[Block]:
    """The blocks after the heading that starts with `starts` and before the one that starts with `ends`."""

    def under(block: Block, prefix: str) -> bool:
        return any(h.startswith(prefix) for h in block.headings)

    out = [b for b in blocks if under(b, starts) and (ends is None or not under(b, ends))]
    assert out, f"no block under a heading starting {starts!r}"
    return out


def table_commands(path: Path, heading: str) -> list[str]:
    """The commands in the `command` column of the table under `heading`, row by row, left to right."""
    text = path.read_text()
    start = text.index(heading)
    rows = [line for line in text[start:].splitlines()[1:] if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    column = header.index("command")
    commands = []
    for row in rows[2:]:
        cell = row.strip("|").split("|")[column]
        commands += [span for span in re.findall(r"`([^`]+)`", cell) if span.startswith(PROGRAMS)]
    return commands


@dataclass(frozen=True)
class LongRunning:
    """A command that runs until stopped: how to tell it is ready, and what to read off its output."""

    command: re.Pattern[str]
    ready: re.Pattern[str]
    captures: tuple[re.Pattern[str], ...] = ()  # named groups become placeholders


@dataclass
class Background:
    command: str
    proc: subprocess.Popen[bytes]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@dataclass
class DocShell:
    """A shell session playing the technician: values, the current folder, background programs."""

    cwd: Path
    values: dict[str, str]
    long_running: Sequence[LongRunning] = ()
    placeholders: Sequence[str] = ("CODE", "ALERT_ID")
    before: Mapping[str, Callable[[DocShell], None]] = field(default_factory=dict)  # command start -> hook
    replace: Mapping[str, str] = field(default_factory=dict)  # a command -> the command run instead
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    background: list[Background] = field(default_factory=list)
    timeout_s: float = 300.0
    logs: Path | None = None

    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.values, "PYTHONUNBUFFERED": "1"}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run_blocks(self, blocks: Sequence[Block]) -> None:
        for block in blocks:
            if not block.runnable:
                self.skipped += [f"{block.source}: {line}" for line in block.lines]
                continue
            for line in block.lines:
                self.run(line, block.source)

    def run(self, command: str, source: str = "") -> None:
        match = ASSIGNMENT.match(command)
        if match:
            self._assign(match.group(1), command)
            return
        command = self.replace.get(command, command)
        for start, hook in self.before.items():
            if command.startswith(start):
                hook(self)
        command = self._fill_placeholders(command)
        self.ran.append(command)
        if command.startswith("cd "):
            self.cwd = Path(self._expand(command[3:].strip()))
            return
        spec = next((spec for spec in self.long_running if spec.command.search(command)), None)
        if spec is not None:
            self._start(command, spec)
            return
        done = subprocess.run(
            ["bash", "-c", f"set -e; {command}"], cwd=self.cwd, env=self.env(), capture_output=True,
            text=True, timeout=self.timeout_s, check=False,
        )  # fmt: skip
        self._log(command, done.stdout + done.stderr)
        assert done.returncode == 0, f"{source}: `{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"

    def output_of(self, prefix: str) -> str:
        """Everything a command (background or not) printed, by how it starts."""
        assert self.logs is not None
        found = [p.read_text() for p in sorted(self.logs.glob("*.log")) if p.read_text().startswith(f"$ {prefix}")]
        found += [b.text() for b in self.background if b.command.startswith(prefix)]
        return "\n".join(found)

    def _assign(self, name: str, line: str) -> None:
        if name in self.values:
            return  # set already: a page's value is an example, the reader's own wins
        done = subprocess.run(
            ["bash", "-c", f"{line}\nprintf %s \"${name}\""], cwd=self.cwd, env=self.env(), capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        self.values[name] = done.stdout

    def _expand(self, word: str) -> str:
        done = subprocess.run(["bash", "-c", f"printf %s {word}"], cwd=self.cwd, env=self.env(),
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    def _fill_placeholders(self, command: str) -> str:
        for name in self.placeholders:
            if re.search(rf"\b{name}\b", command):
                value = self._wait_capture(name)
                command = re.sub(rf"\b{name}\b", shlex.quote(value), command)
        return command

    def _wait_capture(self, name: str) -> str:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            for running in self.background:
                spec = next(s for s in self.long_running if s.command.search(running.command))
                for capture in spec.captures:
                    if name in capture.groupindex and (found := capture.search(running.text())):
                        return found.group(name)
            self._check_alive()
            time.sleep(0.2)
        raise AssertionError(f"nothing printed {name} within {self.timeout_s} s:\n{self._tails()}")

    def _start(self, command: str, spec: LongRunning) -> None:
        assert self.logs is not None
        output = self.logs / f"bg-{len(self.background)}.out"
        with output.open("wb") as sink:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], cwd=self.cwd, env=self.env(), stdout=sink,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        running = Background(command, proc, output)
        self.background.append(running)
        deadline = time.monotonic() + self.timeout_s
        while not spec.ready.search(running.text()):
            assert proc.poll() is None, f"`{command}` exited {proc.returncode}:\n{running.text()}"
            assert time.monotonic() < deadline, f"`{command}` not ready within {self.timeout_s} s:\n{running.text()}"
            time.sleep(0.1)

    def _check_alive(self) -> None:
        for running in self.background:
            spec = next(s for s in self.long_running if s.command.search(running.command))
            if running.proc.poll() is not None and not spec.captures:
                raise AssertionError(f"`{running.command}` exited {running.proc.returncode}:\n{running.text()}")

    def _log(self, command: str, output: str) -> None:
        if self.logs is not None:
            (self.logs / f"{len(self.ran):03d}.log").write_text(f"$ {command}\n{output}")

    def _tails(self) -> str:
        return "\n".join(f"--- {b.command}\n{b.text()[-3000:]}" for b in self.background)

    def stop(self) -> dict[str, int]:
        """Ctrl-C every background program (the daemon stops cleanly on it); their exit codes."""
        codes = {}
        for running in reversed(self.background):
            if running.proc.poll() is None:
                os.killpg(running.proc.pid, signal.SIGINT)
                try:
                    running.proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(running.proc.pid, signal.SIGKILL)
                    running.proc.wait(10)
            codes[running.command] = running.proc.returncode
        return codes

    def __enter__(self) -> DocShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def iter_documented_commands(paths: Sequence[Path]) -> Iterator[tuple[str, str]]:
    """(source, command) for every command in the sh blocks of these files (for the inventory test)."""
    for path in paths:
        for block in sh_blocks(path):
            for line in block.lines:
                yield block.source, line
