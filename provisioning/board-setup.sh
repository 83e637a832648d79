#!/usr/bin/env bash
# Scripted part of a van unit's set-up (docs/board-setup.md walks through all of it).
# Run as root on the board, from a checkout of the lfr-edge repository:
#   sudo provisioning/board-setup.sh --board pi5 --accelerator hailo --unit-id van-07 --broker 10.8.0.1:8883
# --dry-run prints every command instead of running it.
set -euo pipefail

BOARD=""
ACCEL="none"
UNIT_ID=""
BROKER="localhost:8883"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="/opt/lfr-edge"
MODELS=""
DRY_RUN=0

usage() {
  cat <<USAGE
usage: $0 --board pi5|jetson --unit-id ID [--accelerator none|hailo|coral-pcie|coral-usb|jetson]
          [--broker HOST:PORT] [--models DIR] [--src DIR] [--dry-run]
  --models DIR   built models (manifest.toml and .tflite/.hef/.onnx files) to copy to $PREFIX/models
USAGE
}

die() { echo "board-setup: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --board) BOARD="${2:-}"; shift 2 ;;
    --accelerator) ACCEL="${2:-}"; shift 2 ;;
    --unit-id) UNIT_ID="${2:-}"; shift 2 ;;
    --broker) BROKER="${2:-}"; shift 2 ;;
    --models) MODELS="${2:-}"; shift 2 ;;
    --src) SRC="${2:-}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

case "$BOARD" in pi5|jetson) ;; *) usage >&2; die "--board must be pi5 or jetson (got '${BOARD}')" ;; esac
case "$ACCEL" in none|hailo|coral-pcie|coral-usb|jetson) ;; *) die "--accelerator '${ACCEL}' is not one of none, hailo, coral-pcie, coral-usb, jetson" ;; esac
[[ "$UNIT_ID" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "--unit-id '${UNIT_ID}': use 1-64 letters, digits, '-' or '_'"
[[ "$BROKER" =~ ^.+:[0-9]{1,5}$ ]] || die "--broker '${BROKER}': expected HOST:PORT"
[ -f "$SRC/pyproject.toml" ] || die "--src $SRC is not an lfr-edge checkout (no pyproject.toml)"
if [ "$BOARD" = pi5 ] && [ "$ACCEL" = jetson ]; then die "--accelerator jetson needs --board jetson"; fi
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo), or with --dry-run to see the commands"; fi

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$*"
  else
    echo "+ $*"
    "$@"
  fi
}

step() { echo; echo "== $*"; }

step "1. Debian packages"
PACKAGES=(python3-venv python3-pip mosquitto-clients systemd udev)
case "$BOARD" in
  pi5) PACKAGES+=(python3-picamera2 rpicam-apps) ;;
  jetson) PACKAGES+=(python3-libnvinfer nvidia-l4t-gstreamer v4l-utils) ;;
esac
case "$ACCEL" in
  hailo) PACKAGES+=(hailo-all) ;;
  coral-pcie) PACKAGES+=(gasket-dkms libedgetpu1-std) ;;
  coral-usb) PACKAGES+=(libedgetpu1-std) ;;
esac
run apt-get update
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"

step "2. Camera"
if [ "$BOARD" = pi5 ]; then
  # Bookworm detects official camera modules by itself (camera_auto_detect=1); make sure it is on.
  CONFIG_TXT=/boot/firmware/config.txt
  run sh -c "grep -q '^camera_auto_detect=1' $CONFIG_TXT || echo 'camera_auto_detect=1' >> $CONFIG_TXT"
  if [ "$ACCEL" = hailo ]; then
    # The AI Kit / AI HAT+ runs best with PCIe gen 3.
    run sh -c "grep -q '^dtparam=pciex1_gen=3' $CONFIG_TXT || echo 'dtparam=pciex1_gen=3' >> $CONFIG_TXT"
  fi
fi

step "3. lfr-edge into $PREFIX with its own venv"
run install -d -m 0755 "$PREFIX" "$PREFIX/models"
run cp -a "$SRC" "$PREFIX/src"
# --system-site-packages: Picamera2, hailo_platform and TensorRT's Python bindings come from apt.
run python3 -m venv --system-site-packages "$PREFIX/.venv"
run "$PREFIX/.venv/bin/pip" install --disable-pip-version-check -r "$PREFIX/src/requirements.lock"
run "$PREFIX/.venv/bin/pip" install --disable-pip-version-check --no-deps "$PREFIX/src"
if [ -n "$MODELS" ]; then
  run cp -a "$MODELS/." "$PREFIX/models/"
else
  echo "   (no --models: copy the built models, manifest.toml included, to $PREFIX/models before selftest)"
fi

step "4. Service files, service user and device groups"
WITH=()
[ "$BOARD" = jetson ] && WITH+=(--with jetson)
[ "$ACCEL" = coral-usb ] && WITH+=(--with coral-usb)
run "$PREFIX/.venv/bin/lfr-provision" install --root / --source "$PREFIX/src/systemd" "${WITH[@]}"
run systemd-sysusers
for group in video render plugdev dialout; do
  run sh -c "getent group $group >/dev/null && usermod -aG $group lfr-edge || true"
done
run systemd-tmpfiles --create /usr/lib/tmpfiles.d/lfr-edge.conf
run udevadm control --reload
run udevadm trigger --subsystem-match=tty

step "5. Unit identity and config"
run "$PREFIX/.venv/bin/lfr-provision" init --unit-id "$UNIT_ID" --root / --board "$BOARD" --broker "$BROKER"

step "6. Self-test (the go/no-go), then the service"
echo "   Before this step: the unit's TLS certificates (unit.crt, pairing.crt) and the CA must be in /etc/lfr-edge/tls and the"
echo "   command centre key in /etc/lfr-edge/keys (lfr-provision init printed where)."
run "$PREFIX/.venv/bin/lfr-edge" selftest --config /etc/lfr-edge/config.toml
run systemctl daemon-reload
run systemctl enable --now lfr-edge.service
run systemctl --no-pager status lfr-edge.service
