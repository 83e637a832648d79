#!/usr/bin/env bash
# Scripted part of a van unit's set-up (docs/board-setup.md walks through all of it).
# Run as root on the board, from a checkout of the lfr-edge repository:
#   sudo provisioning/board-setup.sh --board pi5 --accelerator hailo --unit-id van-07 --broker 10.8.0.1:8883
# --dry-run prints every command and file change instead of making it. --root DIR makes only the file
# changes (boot configuration, swap off, memory controller on) in an image mounted at DIR.
set -euo pipefail

BOARD=""
ACCEL="none"
UNIT_ID=""
BROKER="localhost:8883"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="/opt/lfr-edge"
MODELS=""
DRY_RUN=0
ROOT="/"

usage() {
  cat <<USAGE
usage: $0 --board pi5|jetson --unit-id ID [--accelerator none|hailo|coral-pcie|coral-usb|jetson]
          [--broker HOST:PORT] [--models DIR] [--src DIR] [--root DIR] [--dry-run]
  --models DIR   built models (manifest.toml, .tflite/.hef/.onnx files, calibration.json) to copy to $PREFIX/models
  --root DIR     an image mounted at DIR: only its files are changed (boot configuration, swap, memory
                 controller); nothing is installed, started or stopped
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
    --root) ROOT="${2:-}"; shift 2 ;;
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
[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT="$(cd "$ROOT" && pwd -P)"
LIVE=1  # this machine, not an image: packages, services and `swapoff` too
[ "$ROOT" = / ] || LIVE=0
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

# File changes under $ROOT. Each says what it changes, or that there was nothing to change (a second run
# changes nothing); with --dry-run they only say what they would change.
at() { if [ "$ROOT" = / ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

edit() {  # edit FILE WHAT NEW-CONTENT-FILE: replace FILE by the new content if it differs
  local file="$1" what="$2" new="$3"
  if cmp -s "$file" "$new"; then
    echo "   $file: $what (already)"
  elif [ "$DRY_RUN" = 1 ]; then
    printf '+ edit %s: %s\n' "$file" "$what"
  else
    echo "+ edit $file: $what"
    cat "$new" > "$file"
  fi
  rm -f "$new"
}

ensure_line() {  # ensure_line FILE LINE: the line is in the file (appended when missing)
  local file="$1" line="$2" new
  if [ ! -f "$file" ]; then
    [ "$DRY_RUN" = 1 ] && { printf '+ edit %s: add %s\n' "$file" "$line"; return; }
    die "$file not found: is this the board's root (--root)? add '$line' to it by hand"
  fi
  new="$(mktemp)"
  cat "$file" > "$new"
  grep -qxF "$line" "$file" || printf '%s\n' "$line" >> "$new"
  edit "$file" "add $line" "$new"
}

kernel_parameters() {  # kernel_parameters FILE PARAM...: the one-line cmdline.txt holds each PARAM once
  local file="$1"; shift
  if [ ! -f "$file" ]; then
    [ "$DRY_RUN" = 1 ] && { printf '+ edit %s: kernel parameters %s\n' "$file" "$*"; return; }
    die "$file not found: Raspberry Pi OS bookworm or later keeps the kernel command line there; add '$*' to it by hand"
  fi
  local new words=() word
  [ "$(grep -c . "$file")" -le 1 ] || die "$file: the kernel command line must be one line; join its lines first"
  new="$(mktemp)"
  read -r -a words < "$file" || true
  local kept=()
  for word in "${words[@]}"; do
    [ "$word" = cgroup_disable=memory ] || kept+=("$word")  # the memory controller must not be turned off
  done
  for word in "$@"; do
    [[ " ${kept[*]} " == *" $word "* ]] || kept+=("$word")
  done
  printf '%s\n' "${kept[*]}" > "$new"
  edit "$file" "kernel parameters $*" "$new"
}

no_swap_in_fstab() {  # every swap line of fstab commented out
  local file new
  file="$(at /etc/fstab)"
  [ -f "$file" ] || { echo "   $file: none"; return; }
  new="$(mktemp)"
  awk '!/^[[:space:]]*#/ && $3 == "swap" { print "# no swap (lfr-edge board-setup): " $0; next } { print }' \
    "$file" > "$new"
  edit "$file" "swap lines commented out" "$new"
}

mask() {  # mask DIR NAME: a unit (or generator) name linked to /dev/null, so systemd never runs it
  local link
  link="$(at "$1")/$2"
  if [ "$(readlink "$link" 2>/dev/null)" = /dev/null ]; then
    echo "   $link: masked (already)"
  elif [ "$DRY_RUN" = 1 ]; then
    printf '+ mask %s\n' "$link"
  else
    echo "+ mask $link"
    mkdir -p "$(dirname "$link")"
    ln -sfn /dev/null "$link"
  fi
}

set_value() {  # set_value FILE KEY VALUE: KEY=VALUE in a shell-style config file, when the file exists
  local file="$1" key="$2" value="$3" new
  [ -f "$file" ] || return 0
  new="$(mktemp)"
  awk -v k="$key" -v v="$value" 'BEGIN { done = 0 }
    $0 ~ "^[[:space:]]*#?[[:space:]]*" k "=" { if (!done) print k "=" v; done = 1; next } { print }
    END { if (!done) print k "=" v }' "$file" > "$new"
  edit "$file" "$key=$value" "$new"
}

remove_file() {
  local file="$1"
  [ -e "$file" ] || return 0
  if [ "$DRY_RUN" = 1 ]; then printf '+ rm %s\n' "$file"; else echo "+ rm $file"; rm -f "$file"; fi
}

live() {  # a command for the running system only (not for an image under --root)
  if [ "$LIVE" = 1 ]; then run "$@"; fi
}

swap_off_for_good() {
  # Now, on the running system: every swap area off (files, partitions, zram).
  live swapoff -a
  if [ "$LIVE" = 1 ] && command -v dphys-swapfile >/dev/null 2>&1; then
    run dphys-swapfile uninstall  # Raspberry Pi OS bookworm: removes /var/swap
  fi
  # At every boot: nothing may turn it on again.
  no_swap_in_fstab
  set_value "$(at /etc/dphys-swapfile)" CONF_SWAPSIZE 0
  remove_file "$(at /var/swap)"
  mask /etc/systemd/system dphys-swapfile.service      # Raspberry Pi OS bookworm: the swap file
  mask /etc/systemd/system-generators rpi-swap-generator  # Raspberry Pi OS trixie (rpi-swap): zram and file
  mask /etc/systemd/system-generators zram-generator   # systemd-zram-generator
  mask /etc/systemd/system zramswap.service            # zram-tools
  mask /etc/systemd/system nvzramconfig.service        # JetPack: zram swap
  mask /etc/systemd/system swap.target                 # and any other swap unit
  live systemctl daemon-reload
}

if [ "$LIVE" = 0 ]; then
  echo "board-setup: --root $ROOT: only the files of the image are changed; nothing is installed or started"
fi

step "1. Debian packages"
[ "$LIVE" = 1 ] || echo "   (skipped: --root)"
if [ "$LIVE" = 1 ]; then
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
fi

step "2. Boot configuration: camera, memory controller; swap off for good"
if [ "$BOARD" = pi5 ]; then
  # Bookworm detects official camera modules by itself (camera_auto_detect=1); make sure it is on.
  CONFIG_TXT="$(at /boot/firmware/config.txt)"
  ensure_line "$CONFIG_TXT" camera_auto_detect=1
  if [ "$ACCEL" = hailo ]; then
    # The AI Kit / AI HAT+ runs best with PCIe gen 3.
    ensure_line "$CONFIG_TXT" dtparam=pciex1_gen=3
  fi
  # Raspberry Pi OS boots with the memory cgroup off: systemd then ignores MemorySwapMax= and MemoryMax=.
  kernel_parameters "$(at /boot/firmware/cmdline.txt)" cgroup_enable=memory cgroup_memory=1
fi
# A passer-by's face must never be written out to swap (the daemon also locks its memory).
swap_off_for_good
if [ "$LIVE" = 0 ]; then
  echo; echo "== done: the image's files are ready (boot it, then run this script on the board itself)"
  exit 0
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
run "$PREFIX/.venv/bin/lfr-provision" selftest --config /etc/lfr-edge/config.toml
run systemctl daemon-reload
run systemctl enable --now lfr-edge.service
run systemctl --no-pager status lfr-edge.service
if [ "$BOARD" = pi5 ]; then
  echo
  echo "   Reboot once now: the memory controller (cmdline.txt) takes effect at the next boot."
fi
