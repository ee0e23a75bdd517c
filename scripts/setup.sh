#!/usr/bin/env bash
# Set up a fresh machine for avsl-edge: Debian packages (optional), a virtualenv, the package.
#   scripts/setup.sh [--system] [--asset-sources] [EXTRAS]     e.g. scripts/setup.sh --system dev
# --system installs the Debian packages the data/audio tests use (needs root or sudo);
# --asset-sources also those that only rebuilding the asset packs reads (python -m
# training.data.build_assets [--pack v2]; v2 also fetches npm packages with node's npm).
# EXTRAS defaults to "train,export"; the venv lives in $VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
system=0
sources=0
if [ "${1:-}" = "--system" ]; then system=1; shift; fi
if [ "${1:-}" = "--asset-sources" ]; then system=1; sources=1; shift; fi
extras=${1:-train,export}

if [ "$system" = 1 ]; then
  pkgs="fluidsynth fluid-soundfont-gm fonts-noto-color-emoji libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins ffmpeg xvfb xdotool"
  # read only when the v2 pack is rebuilt; the committed packs load without them
  if [ "$sources" = 1 ]; then pkgs="$pkgs csound-soundfont sonic-pi-samples lomiri-wallpapers-16.04 npm"; fi
  missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages: $missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# Reinstall only when pyproject.toml or the extras change.
stamp="$VENV/.avsl-edge-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing avsl-edge[$extras] into $VENV"
  "$VENV/bin/python" -m pip install -q -e ".[$extras]"
  rm -f "$VENV"/.avsl-edge-*; touch "$stamp"
fi
