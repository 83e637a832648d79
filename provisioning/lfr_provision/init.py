"""`lfr-provision init`: the unit's keys, TLS request, config file and directories under a root.

The root is the unit's file system: `/` on the van, a folder for a rehearsal on a desk (bench mode). Every
path the config names is inside that root, so a bench unit touches nothing outside its folder and
`lfr-provision --root FOLDER selftest` and `lfr-edge --root FOLDER run` use exactly what init made.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import layout
from lfr_provision import pki
from lfr_provision.identity import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    ProvisionError,
    private_pem,
    public_pem,
    read_command_centre_key,
    tls_request,
    write_file,
)

Board = Literal["pi5", "jetson", "generic", "bench"]
DIR_MODE = 0o750
BENCH_CAMERA = "/srv/lfr-camera"
# The per-board defaults the technician starts from; every value can be edited in config.toml later.
_BOARD_CAMERA = {
    "pi5": ("picamera2", ""),
    "jetson": ("jetson", "csi://0"),
    "generic": ("opencv", "/dev/video0"),
    "bench": ("replay", BENCH_CAMERA),  # a desk: the recording (images or a video) in this folder of the root
}
_BOARD_BACKEND = {"pi5": "onnx-cpu", "jetson": "onnx-tensorrt", "generic": "onnx-cpu", "bench": "onnx-cpu"}
# Sources that need no hardware (a recording, the simulator's street): a desk rehearsal runs them until
# it is stopped, at a rate a laptop keeps up with.
DESK_SOURCES = ("replay", "simulator")
CAMERA_SOURCES_GROUP = "lfr_edge.camera_sources"


@dataclass(frozen=True)
class InitOptions:
    unit_id: str
    root: Path = Path("/")
    board: Board = "pi5"
    broker: str = "localhost:8883"
    ca_cert: Path | None = None
    ca_key: Path | None = None
    command_centre_key: Path | None = None
    force: bool = False
    camera: str | None = None  # a camera source name (default: the board's), e.g. "replay" or "simulator"
    camera_uri: str | None = None  # its device, stream, file or folder (default: the board's)


@dataclass
class Report:
    """What a command did and what the technician does next, printed at the end."""

    done: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = ["Done:", *(f"  - {d}" for d in self.done)]
        if self.next_steps:
            lines += ["Next:", *(f"  {i}. {s}" for i, s in enumerate(self.next_steps, start=1))]
        return "\n".join(lines)


def check_unit_id(unit_id: str) -> None:
    if not unit_id or len(unit_id) > 64 or not all(c.isalnum() or c in "-_" for c in unit_id):
        raise ProvisionError(f"--unit-id {unit_id!r}: use 1-64 letters, digits, '-' or '_' (it becomes the TLS CN)")


def parse_broker(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ProvisionError(f"--broker {text!r}: expected HOST:PORT, e.g. broker.example:8883")
    return host.strip("[]"), int(port_text)


# The ranges lfr-edge.service already allows (IPAddressAllow=); keep the two lists the same.
UNIT_ALLOWED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
        "fc00::/7", "fe80::/10",
    )
)  # fmt: skip


def _outside_allowed(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The broker's address when it is a literal that the unit's IPAddressAllow= does not cover."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if any(address.version == net.version and address in net for net in UNIT_ALLOWED_NETWORKS):
        return None
    return address


def camera_sources() -> list[str]:
    """The camera sources installed here (the `lfr_edge.camera_sources` entry points)."""
    return sorted(ep.name for ep in entry_points(group=CAMERA_SOURCES_GROUP))


def _camera(opts: InitOptions) -> tuple[str, str]:
    source, uri = _BOARD_CAMERA[opts.board]
    if opts.board == "bench":
        uri = str(layout.UnitLayout(opts.root).inside(uri))
    if opts.camera is not None:
        known = camera_sources()
        if opts.camera not in known:
            raise ProvisionError(f"--camera {opts.camera!r}: not a camera source here (known: {', '.join(known)})")
        source, uri = opts.camera, "" if opts.camera != source else uri
    return source, opts.camera_uri if opts.camera_uri is not None else uri


def _q(value: object) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(str(value))


def _camera_table(source: str, uri: str) -> str:
    head = f"source = {_q(source)}\nuri = {_q(uri)}\nwidth = 1280\nheight = 720"
    if source not in DESK_SOURCES:
        return head + "\nfps = 25.0"
    return head + "\nfps = 10.0\noptions = { loop = true }"


def config_text(opts: InitOptions, host: str, port: int) -> str:
    """The unit's config; every path in it is inside opts.root."""
    paths = layout.UnitLayout(opts.root)
    source, uri = _camera(opts)
    models = paths.inside("/opt/lfr-edge/models")
    return f"""# lfr-edge configuration for unit {opts.unit_id}, written by `lfr-provision init`.
# Every key is checked at start; `lfr-provision --root {opts.root} selftest` checks the rest.

[unit]
id = {_q(opts.unit_id)}
state_dir = {_q(paths.state)}
keys_dir = {_q(paths.keys)}
audit_log = {_q(paths.state / "audit.jsonl")}

[models]
dir = {_q(models)}
manifest = {_q(models / "manifest.toml")}

[inference]
# onnx-cpu everywhere (YuNet and SFace, the default models, exist only as ONNX); "onnx-tensorrt" on a
# Jetson; "hailo" (AI Kit / AI HAT+) or "litert-edgetpu" (Coral) run BlazeFace and MobileFaceNet: with them
# set [models] detector = "both" and embedder = "mobilefacenet".
backend = {_q(_BOARD_BACKEND[opts.board])}
threads = 4
engine_cache_dir = {_q(paths.state / "engines")}

[[cameras]]
name = "cam0"
{_camera_table(source, uri)}

[mqtt]
host = {_q(host)}
port = {port}
ca_file = {_q(paths.tls / layout.TLS_CA)}
cert_file = {_q(paths.tls / layout.TLS_CERT)}
key_file = {_q(paths.tls / layout.TLS_KEY)}

[watchlist]
command_centre_key = {_q(paths.keys / layout.COMMAND_CENTRE_PUB)}

[alerts]
handsets_dir = {_q(paths.handsets)}

[beacon]
enabled = true
port = {_q(paths.inside("/dev/lfr-beacon"))}

[daemon]
watchdog_stall_s = 10.0
"""


def _service_ids(root: Path) -> tuple[int, int] | None:
    """The service user's uid/gid in root's /etc/passwd (None before systemd-sysusers has run)."""
    passwd = root / "etc" / "passwd"
    if root == Path("/"):
        try:
            entry = pwd.getpwnam(layout.SERVICE_USER)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid
    try:
        lines = passwd.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == layout.SERVICE_USER:
            return int(parts[2]), int(parts[3])
    return None


def _make_dir(path: Path, report: Report) -> None:
    if path.is_dir():
        return
    path.mkdir(parents=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    report.done.append(f"created {path} (mode 0750)")


def init_unit(opts: InitOptions) -> Report:
    """Create the unit's identity and config under opts.root; refuse to replace keys without force."""
    opts = replace(opts, root=opts.root.absolute())  # the config names absolute paths
    check_unit_id(opts.unit_id)
    host, port = parse_broker(opts.broker)
    if (opts.ca_cert is None) != (opts.ca_key is None):
        raise ProvisionError("--ca-cert and --ca-key go together (the CA certificate and its private key)")
    ca = pki.load_ca(opts.ca_cert, opts.ca_key) if opts.ca_cert and opts.ca_key else None
    _camera(opts)  # an unknown camera source stops init before anything is written
    cc_pem = read_command_centre_key(opts.command_centre_key) if opts.command_centre_key else None
    paths = layout.UnitLayout(opts.root)
    private_files = [
        paths.keys / layout.UNIT_X25519_KEY,
        paths.keys / layout.UNIT_ED25519_KEY,
        paths.tls / layout.TLS_KEY,
    ]
    existing = [p for p in private_files if p.exists()]
    if existing and not opts.force:
        raise ProvisionError(
            f"{existing[0]} already exists: this unit already has an identity. Replacing it breaks the "
            "command centre's copy of its public keys; pass --force only to re-provision on purpose."
        )
    report = Report()
    for directory in (paths.etc, paths.keys, paths.tls, paths.handsets, paths.state):
        _make_dir(directory, report)
    if opts.board == "bench" and opts.camera is None and opts.camera_uri is None:
        camera = paths.inside(BENCH_CAMERA)
        camera.mkdir(parents=True, exist_ok=True)
        report.next_steps.append(f"put the recording the camera replays (images or a video file) in {camera}")

    x_key = X25519PrivateKey.generate()
    e_key = Ed25519PrivateKey.generate()
    tls_key = ec.generate_private_key(ec.SECP256R1())
    write_file(paths.keys / layout.UNIT_X25519_KEY, private_pem(x_key), PRIVATE_MODE, opts.force)
    write_file(paths.keys / layout.UNIT_X25519_PUB, public_pem(x_key), PUBLIC_MODE, True)
    write_file(paths.keys / layout.UNIT_ED25519_KEY, private_pem(e_key), PRIVATE_MODE, opts.force)
    write_file(paths.keys / layout.UNIT_ED25519_PUB, public_pem(e_key), PUBLIC_MODE, True)
    report.done.append(f"X25519 key pair (watchlist sealing): {paths.keys / layout.UNIT_X25519_KEY} (0600) + .pub")
    report.done.append(f"Ed25519 key pair (signing): {paths.keys / layout.UNIT_ED25519_KEY} (0600) + .pub")

    write_file(paths.tls / layout.TLS_KEY, private_pem(tls_key), PRIVATE_MODE, opts.force)
    csr = tls_request(opts.unit_id, tls_key)
    write_file(paths.tls / layout.TLS_CSR, csr.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE, True)
    report.done.append(
        f"TLS client key {paths.tls / layout.TLS_KEY} (0600) and request {layout.TLS_CSR} (CN={opts.unit_id})"
    )
    if ca is not None and opts.ca_cert is not None:
        pki.sign_unit_request(ca, paths.tls / layout.TLS_CSR, paths.tls)
        report.done.append(
            f"TLS client certificates {layout.TLS_CERT} (CN={opts.unit_id}) and {layout.TLS_PAIRING_CERT} "
            f"(CN={layout.pairing_identity(opts.unit_id)}) signed by {opts.ca_cert}; CA copied to {layout.TLS_CA}"
        )
    else:
        report.next_steps.append(
            f"have the command centre CA sign {paths.tls / layout.TLS_CSR}: `lfr-provision ca sign --ca CA_DIR "
            f"--csr {paths.tls / layout.TLS_CSR} --out {paths.tls}` writes {layout.TLS_CERT}, "
            f"{layout.TLS_PAIRING_CERT} and {layout.TLS_CA} (copy them back here if the CA is elsewhere)"
        )
    if cc_pem is not None:
        write_file(paths.keys / layout.COMMAND_CENTRE_PUB, cc_pem, PUBLIC_MODE, True)
        report.done.append(f"command centre key installed: {paths.keys / layout.COMMAND_CENTRE_PUB}")
    elif not (paths.keys / layout.COMMAND_CENTRE_PUB).exists():
        report.next_steps.append(
            f"copy the command centre's Ed25519 public key to {paths.keys / layout.COMMAND_CENTRE_PUB}"
        )
    report.next_steps.append(
        f"send {paths.keys / layout.UNIT_X25519_PUB} and {layout.UNIT_ED25519_PUB} to the command centre "
        f"(it seals watchlists to the first and checks unit {opts.unit_id}'s signatures with the second)"
    )

    if paths.config.exists() and not opts.force:
        report.done.append(f"kept the existing config {paths.config} (--force rewrites it)")
    else:
        write_file(paths.config, config_text(opts, host, port).encode(), 0o640, True)
        report.done.append(f"config written: {paths.config} (board {opts.board}, broker {host}:{port})")

    public = _outside_allowed(host)
    if public is not None:
        dropin = paths.inside("/etc/systemd/system/lfr-edge.service.d/network.conf")
        dropin.parent.mkdir(parents=True, exist_ok=True)
        prefix = 32 if public.version == 4 else 128
        text = (
            "# Written by lfr-provision init: the broker's public address.\n"
            f"[Service]\nIPAddressAllow={public}/{prefix}\n"
        )
        write_file(dropin, text.encode(), 0o644, True)
        report.done.append(f"{dropin}: the service may reach the broker at {public}")

    _set_owners(paths, private_files, report)
    report.next_steps.append(f"lfr-provision install --root {opts.root} (if not done yet)")
    report.next_steps.append(f"lfr-provision --root {opts.root} selftest")
    return report


def _set_owners(paths: layout.UnitLayout, private_files: list[Path], report: Report) -> None:
    """Keys: owner lfr-edge, 0600; directories: root:lfr-edge 0750 (the daemon reads, cannot change)."""
    ids = _service_ids(paths.root)
    if ids is None or os.geteuid() != 0:
        who = "the user lfr-edge does not exist yet" if ids is None else "not running as root"
        report.next_steps.append(
            f"{who}: after `systemd-sysusers` has created it, re-run init with --force or run "
            f"`chown lfr-edge: {' '.join(str(p) for p in private_files)}"
            f" && chgrp -R lfr-edge {paths.etc} {paths.state}`"
        )
        return
    uid, gid = ids
    for directory in (paths.etc, paths.keys, paths.tls, paths.handsets):
        os.chown(directory, 0, gid)
    os.chown(paths.state, uid, gid)
    os.chown(paths.config, 0, gid)
    for key in private_files:
        os.chown(key, uid, gid)
    report.done.append(f"owners set: private keys lfr-edge ({uid}), directories root:lfr-edge ({gid})")
