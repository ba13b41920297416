#!/usr/bin/env bash
# Installs the programs a build needs besides Rust and a C compiler: meson and ninja, which build dav1d
# (the AV1 decoder behind AVIF images, compiled from the source the libdav1d-sys crate bundles), and nasm,
# which assembles dav1d's x86 SIMD code. All three from Debian's packages (meson, ninja-build, nasm);
# does nothing when suitable versions are already on the PATH.
#
#   scripts/build-tools.sh            # check, and install what is missing (root or sudo)
#   scripts/build-tools.sh --check    # check only: exit 1 and say what is missing
#
# Run by scripts/setup.sh, scripts/test.sh, .ci/run, the Dockerfile's build stage and the GitLab build job.
# Elsewhere than Debian or Ubuntu, install them yourself: meson >= 0.49 and ninja (`pip install meson
# ninja` will do), and nasm >= 2.14 on x86 (your system's package; ARM needs none).
set -euo pipefail

CHECK_ONLY=0
case "${1:-}" in
  --check) CHECK_ONLY=1 ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "build-tools: unknown argument '$1'" >&2; exit 2 ;;
esac

# nasm assembles dav1d's x86 code only; on ARM dav1d's assembly goes through the C compiler.
case "$(uname -m)" in
  x86_64|amd64|i?86) NEED_NASM=1 ;;
  *) NEED_NASM=0 ;;
esac

# version_ge A B: is version A at least B (numeric dotted parts)?
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

missing() {
  local out=()
  if ! command -v meson >/dev/null || ! version_ge "$(meson --version 2>/dev/null || echo 0)" 0.49; then
    out+=(meson)
  fi
  command -v ninja >/dev/null || out+=(ninja-build)
  if [ "$NEED_NASM" = 1 ]; then
    # "NASM version 2.16.01 compiled on ..."
    if ! command -v nasm >/dev/null \
       || ! version_ge "$(nasm -v 2>/dev/null | awk '{print $3}' || echo 0)" 2.14; then
      out+=(nasm)
    fi
  fi
  echo "${out[@]+"${out[@]}"}"
}

need=$(missing)
if [ -z "$need" ]; then
  exit 0
fi
if [ "$CHECK_ONLY" = 1 ]; then
  echo "build-tools: missing or too old: $need (scripts/build-tools.sh installs them)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "build-tools: missing or too old: $need, and this is not a Debian system: install meson >= 0.49" \
       "and ninja (pip install meson ninja), and nasm >= 2.14 on x86, then run this again" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "build-tools: need root (or sudo) to install: $need" >&2; exit 1; }
  SUDO="sudo"
fi
echo "build-tools: installing $need (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine or image may have no package lists yet: update only when the install cannot find them.
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

need=$(missing)
if [ -n "$need" ]; then
  echo "build-tools: still missing or too old after the install: $need" >&2
  exit 1
fi
versions="meson $(meson --version), ninja $(ninja --version)"
[ "$NEED_NASM" = 0 ] || versions="$versions, nasm $(nasm -v | awk '{print $3}')"
echo "build-tools: $versions" >&2
