"""`lfr-watchlist`: the command centre's tool to build, sign, seal, publish, close and inspect watchlists.

    lfr-watchlist keygen --out DIR
    lfr-watchlist build --photos DIR --subjects CSV --deployment ID --valid-from T --valid-until T
                        (--false-alerts "1 in N" | --threshold X) --sign-key KEY
                        --unit-key [ID=]UNIT.pub [--unit-key ...] --out PATTERN [--version N]
                        [--skip-unusable] [--config UNIT_CONFIG]
    lfr-watchlist publish BUNDLE --broker HOST:PORT --ca CA --cert CERT --key KEY --unit ID [--wait-ack]
    lfr-watchlist close --deployment ID --unit ID --sign-key KEY --broker ... [--wait-ack]
                        (with --wait-ack, the retained message is cleared once the unit answers closed)
    lfr-watchlist inspect BUNDLE [--verify-key KEY.pub]

The subjects CSV has a header row with the columns subject_id, category, photos (file names in --photos,
separated by ';') and reference; docs/watchlist.md describes each. A unit key's id is given as `ID=PATH`,
or is the file's name without its extension (`keys/van-07.pub` is unit `van-07`); a unit's own key file,
unit-x25519.pub, names no unit, so give it as `van-07=unit-x25519.pub`. `--out` names the bundle file
(extension .lfrwl); `{unit}` in it is replaced by the unit id, and it is required when there is more than one
unit key (`--out out/{unit}.lfrwl`). Times are UTC ISO 8601 (`2026-05-01T08:00Z`) or epoch seconds.

The connection options (--broker, --ca, --cert, --key, --prefix, --timeout) may come before or after the
command. Each certificate is one identity on the broker, which holds one connection per identity.
"""

from __future__ import annotations

import argparse
import csv
import json
import queue
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from lfr_contracts import bundle, crypto, layout, records
from lfr_contracts.acks import AckError, WatchlistAck, decode_ack
from lfr_contracts.status import StatusError, UnitStatus
from lfr_contracts.topics import Topics
from lfr_edge import keyfiles
from lfr_edge.cli_options import Shared, check_required, declare, parent
from lfr_edge.comms.mqtt import tls_client
from lfr_tools.command_centre.enrol import Enroller
from lfr_tools.progress import progress as show_progress

MAX_INSPECT_BYTES = 1 << 31
MAX_ACK_BYTES = 64 * 1024  # a unit's answer is a few hundred bytes


class CliError(Exception):
    """A user error: the message says which argument or file is wrong."""


SUBJECTS_COLUMNS = ("subject_id", "category", "photos", "reference")
SUBJECTS_HELP = """Enrol every subject of --subjects with the unit's model; sign and seal one bundle per unit.

The subjects CSV (UTF-8, header row) has the columns:
  subject_id  required, unique in the file
  category    why the subject is listed (may be empty); shown with each alert
  photos      file names in --photos, separated by ';' (each with exactly one clear face)
  reference   the command centre's free-text reference, e.g. a warrant number (may be empty)
Each column, its limits and an example: docs/watchlist.md."""


@dataclass(frozen=True)
class SubjectRow:
    subject_id: str
    category: str
    photos: list[str]
    reference: str


def read_subjects(path: Path) -> list[SubjectRow]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            needed = set(SUBJECTS_COLUMNS)
            missing = needed - set(reader.fieldnames or [])
            if missing:
                raise CliError(f"{path}: missing column(s) {', '.join(sorted(missing))} (need {sorted(needed)})")
            rows = []
            for line, rec in enumerate(reader, start=2):
                sid = (rec["subject_id"] or "").strip()
                photos = [p.strip() for p in (rec["photos"] or "").split(";") if p.strip()]
                if not sid or not photos:
                    raise CliError(f"{path}:{line}: subject_id and at least one photo are required")
                rows.append(SubjectRow(sid, (rec["category"] or "").strip(), photos, (rec["reference"] or "").strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CliError(f"{path}: cannot read the subjects CSV ({exc})") from exc
    ids = [r.subject_id for r in rows]
    if len(set(ids)) != len(ids):
        raise CliError(f"{path}: subject ids must be unique")
    if not rows:
        raise CliError(f"{path}: no subjects")
    return rows


def enrol_subjects(
    rows: list[SubjectRow],
    photos_dir: Path,
    enroller: Enroller,
    *,
    skip_unusable: bool,
    progress: bool = True,
) -> tuple[list[bundle.SubjectEntry], list[str]]:
    """Enrol every photo; returns the entries and one line per unusable photo or skipped subject."""
    from lfr_tools.photos.image import ImageError, read_image

    problems: list[str] = []
    entries: list[bundle.SubjectEntry] = []
    total = sum(len(r.photos) for r in rows)
    bar = show_progress(total, "enrolling", "photo", enabled=progress and total >= 20)
    for row in rows:
        embeddings, photo = [], b""
        for name in row.photos:
            bar.update(1)
            try:
                result = enroller.enrol(read_image(photos_dir / name))
            except ImageError as exc:
                problems.append(f"{row.subject_id}: {name}: unreadable ({exc})")
                continue
            if result.embedding is None:
                problems.append(f"{row.subject_id}: {name}: {result.reason}")
                continue
            for note in result.notes:
                bar.write(f"note: {row.subject_id}: {name}: {note}")
            embeddings.append(result.embedding)
            photo = photo or result.photo_jpeg
        if not embeddings:
            problems.append(f"{row.subject_id}: no usable photo" + ("; subject skipped" if skip_unusable else ""))
            continue
        entries.append(bundle.SubjectEntry(row.subject_id, row.category, row.reference, np.stack(embeddings), photo))
    bar.close()
    return entries, problems


BUNDLE_SUFFIX = ".lfrwl"
GENERIC_KEY_NAME = Path(layout.UNIT_X25519_PUB).stem  # every provisioned unit's key file has this name


def parse_unit_key(spec: str) -> tuple[str, X25519PublicKey]:
    unit_id, sep, path = spec.partition("=")
    if not sep:
        path, unit_id = spec, Path(spec).stem
        if unit_id == GENERIC_KEY_NAME:
            raise CliError(
                f"--unit-key {spec}: {layout.UNIT_X25519_PUB} is the name of every unit's key, not a unit id; "
                f"say whose it is: --unit-key van-07={spec}"
            )
    if not unit_id or not all(c.isalnum() or c in "-_" for c in unit_id):
        raise CliError(f"--unit-key {spec}: {unit_id!r} is not a unit id (letters, digits, '-', '_'); use ID=PATH")
    return unit_id, keyfiles.load_x25519_public(Path(path))


def check_validity(valid_from: float, valid_until: float, now: float) -> None:
    """Refuse a window the unit would refuse: one that ends before it starts or has already ended."""
    if valid_until <= valid_from:
        raise CliError(f"--valid-until {bundle.iso(valid_until)} is not after --valid-from {bundle.iso(valid_from)}")
    if valid_until <= now:
        raise CliError(
            f"--valid-until {bundle.iso(valid_until)} has already passed (now {bundle.iso(now)}): every unit "
            "would refuse the bundle as expired; give the end of the deployment"
        )


def _broker_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT")
    return host, int(port)


def _time(value: str) -> float:
    try:
        return bundle.parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


# commands ---------------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    keyfiles.save_private_key(args.out / "command-centre.key", key)
    keyfiles.save_public_key(args.out / "command-centre.pub", key.public_key())
    print(f"wrote {args.out / 'command-centre.key'} (0600, keep it offline) and {args.out / 'command-centre.pub'}")
    print("next: install command-centre.pub on each unit as watchlist.command_centre_key")
    return 0


def cmd_build(args: argparse.Namespace, enroller: Enroller | None = None) -> int:
    check_validity(args.valid_from, args.valid_until, time.time())
    units = [parse_unit_key(spec) for spec in args.unit_key]
    if len(units) > 1 and "{unit}" not in args.out:
        raise CliError("--out must contain {unit} when there is more than one --unit-key")
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise CliError(f"--threshold {args.threshold}: must be a cosine similarity in (0, 1]")
    if args.threshold is None and args.false_alerts is None:
        raise CliError('give --false-alerts "1 in N" (the threshold from the list\'s size) or --threshold')
    sign_key = keyfiles.load_ed25519_private(args.sign_key)
    rows = read_subjects(args.subjects)
    from lfr_edge.config import load_config_or_defaults

    cfg = load_config_or_defaults(getattr(args, "config", None))
    if enroller is None:
        from lfr_edge.vision.pipeline import build_pipeline
        from lfr_tools.command_centre.enrol import PipelineEnroller

        enroller = PipelineEnroller(build_pipeline(cfg))
    entries, problems = enrol_subjects(rows, args.photos, enroller, skip_unusable=args.skip_unusable)
    for line in problems:
        print(f"unusable: {line}", file=sys.stderr)
    failed = [r.subject_id for r in rows if r.subject_id not in {e.id for e in entries}]
    if failed and not args.skip_unusable:
        raise CliError(f"{len(failed)} subject(s) have no usable photo: {', '.join(failed)} (or --skip-unusable)")
    if not entries:
        raise CliError("no subject could be enrolled")
    threshold = choose_threshold(args, cfg.models.dir, enroller.model_id, entries)
    version = args.version if args.version is not None else int(time.time())
    for unit_id, unit_key in units:
        data = bundle.build_bundle(
            entries,
            deployment=args.deployment,
            unit_id=unit_id,
            unit_key=unit_key,
            version=version,
            valid_from=args.valid_from,
            valid_until=args.valid_until,
            threshold=threshold,
            model_id=enroller.model_id,
            sign_key=sign_key,
            issued_at=time.time(),
        )
        out = Path(args.out.replace("{unit}", unit_id))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        print(f"{out}: unit {unit_id}, version {version}, {len(entries)} subjects, {len(data)} bytes")
    return 0


def choose_threshold(
    args: argparse.Namespace, models_dir: Path, model_id: str, entries: list[bundle.SubjectEntry]
) -> float:
    """--false-alerts for this many subjects (or --threshold), with what the calibration table says of it."""
    from lfr_contracts.calibration import CALIBRATION_FILE
    from lfr_tools.command_centre import threshold

    try:
        table = threshold.load_table(models_dir, model_id)
        chosen = threshold.plan(
            table,
            subjects=len(entries),
            comparisons=sum(len(e.embeddings) for e in entries),
            false_alerts=args.false_alerts,
            threshold=args.threshold,
            where=str(models_dir / CALIBRATION_FILE),
        )
    except threshold.ThresholdError as exc:
        raise CliError(str(exc)) from exc
    for line in chosen.lines:
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)
    return chosen.threshold


def _false_alerts(value: str) -> float:
    from lfr_contracts.calibration import CalibrationError, parse_rate

    try:
        return parse_rate(value)
    except CalibrationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _send(
    args: argparse.Namespace, unit_id: str, payload: bytes, describe: str, *, clear_when_closed: bool = False
) -> int:
    """Publish retained QoS 1 to the unit's watchlist topic, wait for PUBACK and optionally the unit's ack.
    With `clear_when_closed`, once the unit answers `closed` the retained message is cleared too."""
    topics = Topics.for_unit(args.prefix, unit_id)
    client = tls_client(f"command-centre-{secrets.token_hex(4)}", args.ca, args.cert, args.key)
    acks: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client.on_message = lambda c, u, m: acks.put(bytes(m.payload))  # read here, never in paho's thread
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(True)
    try:
        client.connect(args.broker[0], args.broker[1], keepalive=30)
    except OSError as exc:
        raise CliError(f"cannot connect to the broker {args.broker[0]}:{args.broker[1]}: {exc}") from exc
    client.loop_start()
    try:
        if args.wait_ack:
            client.subscribe(topics.watchlist_ack, 1)
            subscribed.get(timeout=args.timeout)
        info = client.publish(topics.watchlist, payload, qos=1, retain=True)
        info.wait_for_publish(args.timeout)
        print(f"published {describe} to {topics.watchlist} (retained, QoS 1, acknowledged by the broker)")
        if not args.wait_ack:
            return 0
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                payload = acks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                print(
                    f"no answer from unit {unit_id} within {args.timeout:g} s (offline, or not running): the "
                    f"{describe} stays retained on {topics.watchlist}, and the unit applies it when it next "
                    "connects; its answer then goes to the watchlist/ack topic",
                    file=sys.stderr,
                )
                return 1
            try:
                ack = read_ack(payload, unit_id)
            except CliError as exc:  # only the unit may write there (the ACL): say so and wait on
                print(f"ignored: {exc}", file=sys.stderr)
                continue
            print(f"unit {unit_id} answered: {json.dumps(records.encode(ack))}")
            if clear_when_closed and ack.status == "closed":
                _clear_retained(client, topics.watchlist, args.timeout)
            return 0 if ack.done else 1
    except (queue.Empty, RuntimeError, ValueError) as exc:
        raise CliError(f"the broker did not confirm the message: {exc}") from exc
    finally:
        client.disconnect()
        client.loop_stop()


def _clear_retained(client: paho.Client, topic: str, timeout_s: float) -> None:
    """An empty retained message: the broker keeps nothing for the unit (it reads that as "nothing retained";
    its lifecycle record remembers the close, so a bundle of the closed deployment is never applied again)."""
    info = client.publish(topic, b"", qos=1, retain=True)
    info.wait_for_publish(timeout_s)
    if not info.is_published():
        raise CliError(f"the broker did not confirm clearing {topic} within {timeout_s:g} s; the close stays retained")
    print(f"cleared the retained message on {topic}: the broker keeps no watchlist for this unit")


def read_ack(payload: bytes, unit_id: str) -> WatchlistAck:
    """The unit's answer on its watchlist/ack topic; a CliError naming what is wrong with one that is not."""
    try:
        return decode_ack(payload)
    except AckError as exc:
        raise CliError(f"unit {unit_id} answered with a message that is not a watchlist ack: {exc}") from None


def check_before_publishing(
    data: bytes, unit_id: str, now: float, *, verify_key: Path | None, unit_key: Path | None, status: UnitStatus | None
) -> list[str]:
    """What the unit would refuse, found before sending: unit id, signature, seal, window, model. A CliError for
    each refusal; the lines returned say what could not be checked here."""
    envelope = bundle.read_envelope(data, MAX_INSPECT_BYTES)
    header = bundle.parse_bundle_header(envelope.header)
    unchecked = []
    if header.unit != unit_id:
        raise CliError(f"the bundle is for unit {header.unit!r}, not {unit_id!r}: build one per unit")
    if verify_key is None:
        unchecked.append("signature not checked (give --verify-key command-centre.pub)")
    else:
        try:
            bundle.verify_envelope(envelope, keyfiles.load_ed25519_public(verify_key))
        except bundle.SignatureInvalid as exc:
            raise CliError(f"the signature does not verify with {verify_key}: the unit would refuse it") from exc
    if unit_key is None:
        unchecked.append("seal not checked (give --unit-key the unit's unit-x25519.pub)")
    else:
        wanted = crypto.key_id(keyfiles.load_x25519_public(unit_key))
        if wanted not in crypto.envelope_key_ids(envelope.body):
            raise CliError(f"the bundle is not sealed to {unit_key}: the unit could not open it")
    if now >= header.valid_until:
        raise CliError(f"the bundle's window ended at {bundle.iso(header.valid_until)}: build a new version")
    if now < header.valid_from:
        unchecked.append(f"valid from {bundle.iso(header.valid_from)}: the unit holds it until then")
    if status is None or status.model is None:
        unchecked.append(f"model not checked: unit {unit_id} has published no status with its model")
    elif status.model != header.model_id:
        raise CliError(
            f"the bundle was enrolled with {header.model_id}, but unit {unit_id} runs {status.model}: enrol again "
            "with the unit's model (lfr-watchlist build with the unit's config)"
        )
    return unchecked


def cmd_publish(args: argparse.Namespace) -> int:
    data = args.bundle.read_bytes()
    status = read_status(args, args.unit)
    unchecked = check_before_publishing(
        data, args.unit, time.time(), verify_key=args.verify_key, unit_key=args.unit_key, status=status
    )
    for line in unchecked:
        print(f"note: {line}")
    version = bundle.read_envelope(data, MAX_INSPECT_BYTES).header.get("version")
    return _send(args, args.unit, data, f"{args.bundle} (version {version})")


def read_status(args: argparse.Namespace, unit_id: str) -> UnitStatus | None:
    """The unit's retained status from the broker, or None when it never published one."""
    topics = Topics.for_unit(args.prefix, unit_id)
    client = tls_client(f"command-centre-{secrets.token_hex(4)}", args.ca, args.cert, args.key)
    got: queue.Queue[bytes] = queue.Queue()
    client.on_message = lambda c, u, m: got.put(bytes(m.payload))
    try:
        client.connect(args.broker[0], args.broker[1], keepalive=30)
    except OSError as exc:
        raise CliError(f"cannot connect to the broker {args.broker[0]}:{args.broker[1]}: {exc}") from exc
    client.loop_start()
    try:
        client.subscribe(topics.status, 1)
        try:
            payload = got.get(timeout=min(args.timeout, 3.0))  # a retained message arrives at once if there is one
        except queue.Empty:
            return None
        try:
            return UnitStatus.decode(payload)
        except StatusError as exc:
            raise CliError(f"unit {unit_id}'s status message is not one a unit writes: {exc}") from exc
    finally:
        client.disconnect()
        client.loop_stop()


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 with the unit's retained status; 1 when the unit never published one."""
    status = read_status(args, args.unit)
    if status is None:
        print(f"unit {args.unit}: no status on the broker (never connected, or another prefix)")
        return 1
    watchlist = status.watchlist.summary() if status.watchlist is not None else "not said (the broker's last will)"
    if status.watchlist is not None and status.watchlist.valid_until is not None:
        watchlist += f", valid until {bundle.iso(status.watchlist.valid_until)}"
    print(f"unit {status.unit}: {status.state} since {status.time} (connection {status.seq})")
    print(f"watchlist: {watchlist}")
    print(f"model: {status.model or 'not said'}")
    return 0


def cmd_close(args: argparse.Namespace) -> int:
    sign_key = keyfiles.load_ed25519_private(args.sign_key)
    data = bundle.build_close(args.deployment, args.unit, sign_key, time.time(), secrets.token_hex(8))
    done = _send(args, args.unit, data, f"close of deployment {args.deployment}", clear_when_closed=True)
    if not args.wait_ack:
        print(
            "the close stays retained (it replaced the bundle) until the unit has it; with --wait-ack the retained "
            "message is cleared once the unit answers closed"
        )
    return done


def cmd_inspect(args: argparse.Namespace) -> int:
    data = args.bundle.read_bytes()
    envelope = bundle.read_envelope(data, MAX_INSPECT_BYTES)
    kind = "watchlist bundle" if envelope.magic == bundle.BUNDLE_MAGIC else "close command"
    print(f"{args.bundle}: {kind}, {len(data)} bytes")
    print(json.dumps(envelope.header, indent=2, sort_keys=True))
    if envelope.body:
        ids = crypto.envelope_key_ids(envelope.body)
        print(f"sealed to key id(s): {', '.join(i.hex() for i in ids)} (cannot be decrypted here)")
    if args.verify_key is None:
        print("signature: not checked (give --verify-key command-centre.pub)")
        return 0
    try:
        bundle.verify_envelope(envelope, keyfiles.load_ed25519_public(args.verify_key))
    except bundle.SignatureInvalid as exc:
        print(f"signature: INVALID ({exc})")
        return 1
    print(f"signature: valid ({args.verify_key})")
    return 0


# The broker connection (publish, close): accepted before or after the command.
CONNECTION_OPTIONS = (
    Shared(("--broker",), {"type": _broker_address, "default": None, "metavar": "HOST:PORT"}, required=True),
    Shared(("--ca",), {"type": Path, "default": None, "help": "the broker's CA certificate"}, required=True),
    Shared(("--cert",), {"type": Path, "default": None, "help": "the command centre's certificate"}, required=True),
    Shared(("--key",), {"type": Path, "default": None, "help": "its private key"}, required=True),
    Shared(("--prefix",), {"default": "lfr/v1", "help": "topic prefix (default lfr/v1)"}),
    Shared(("--timeout",), {"type": float, "default": 30.0, "help": "seconds to wait for the broker, the unit"}),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr-watchlist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    declare(parser, CONNECTION_OPTIONS, after_command=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create the command centre's Ed25519 signing key pair")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser(
        "build",
        help="enrol subjects and write one signed, sealed bundle per unit",
        description=SUBJECTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--subjects", type=Path, required=True, help="the subjects CSV (columns: docs/watchlist.md)")
    p.add_argument("--deployment", required=True)
    p.add_argument("--valid-from", type=_time, required=True)
    p.add_argument("--valid-until", type=_time, required=True)
    p.add_argument(
        "--false-alerts",
        type=_false_alerts,
        default=None,
        metavar='"1 in N"',
        help="false alerts per passer-by on no list: sets the threshold for this list's size from the "
        "embedder's calibration table (made by `make models`)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="a cosine threshold; overrides --false-alerts (with a warning when it implies a worse rate)",
    )
    p.add_argument("--sign-key", type=Path, required=True)
    p.add_argument("--unit-key", action="append", required=True, metavar="[ID=]UNIT.pub")
    p.add_argument(
        "--out", required=True, help=f"bundle file, e.g. van-07{BUNDLE_SUFFIX}; {{unit}} is replaced by the unit id"
    )
    p.add_argument("--version", type=int, default=None, help="default: the current time in epoch seconds")
    p.add_argument("--skip-unusable", action="store_true", help="leave out subjects with no usable photo")
    p.add_argument("--config", type=Path, default=None, help="the unit's config (models, quality settings)")
    p.set_defaults(func=cmd_build)

    after = [parent(CONNECTION_OPTIONS)]
    for name, helptext in (
        ("publish", "publish a bundle to a unit (retained)"),
        ("close", "send a signed close (with --wait-ack: then clear the retained message)"),
    ):
        p = sub.add_parser(name, help=helptext, parents=after)
        if name == "publish":
            p.add_argument("bundle", type=Path, help=f"the bundle file ({BUNDLE_SUFFIX}) from build")
        else:
            p.add_argument("--deployment", required=True)
            p.add_argument("--sign-key", type=Path, required=True)
        p.add_argument("--unit", required=True)
        p.add_argument("--wait-ack", action="store_true", help="wait for the unit's ack or refusal")
        if name == "publish":
            p.add_argument("--verify-key", type=Path, help="command-centre.pub: check the signature before sending")
            p.add_argument("--unit-key", type=Path, help="the unit's unit-x25519.pub: check the bundle is sealed to it")
        p.set_defaults(func=cmd_publish if name == "publish" else cmd_close)

    p = sub.add_parser("status", help="what a unit holds, from its retained status", parents=after)
    p.add_argument("--unit", required=True)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("inspect", help="print a bundle's header (no key needed) and check its signature")
    p.add_argument("bundle", type=Path)
    p.add_argument("--verify-key", type=Path, default=None)
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("publish", "close", "status"):
        check_required(parser, args, CONNECTION_OPTIONS, args.command)
    try:
        return int(args.func(args))
    except (CliError, crypto.CryptoError, bundle.BundleError, ValueError) as exc:
        print(f"lfr-watchlist {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lfr-watchlist {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
