#!/usr/bin/env bash
# Installs the Debian packages onramp needs to build, test and benchmark. Idempotent: a
# package already present is left alone, and nothing is fetched when all are there.
set -euo pipefail

pkgs=(
    build-essential g++ pkg-config meson ninja-build
    libsimdjson-dev libxxhash-dev libisal-dev libcriterion-dev
    libmicrohttpd-dev zlib1g-dev
    clang libclang-rt-14-dev
    nodejs
    jq
)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "deps: missing packages: ${missing[*]}" >&2
        echo "deps: run 'sudo scripts/deps.sh' (or install them as root), then retry" >&2
        exit 1
    fi
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
