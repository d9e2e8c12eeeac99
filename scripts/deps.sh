#!/usr/bin/env bash
# Installs the Debian and npm packages onramp needs to build, test and benchmark. Idempotent:
# a package already present is left alone, and nothing is fetched when all are there.
set -euo pipefail

pkgs=(
    build-essential g++ pkg-config meson ninja-build
    libsimdjson-dev libxxhash-dev libisal-dev libcriterion-dev
    libmicrohttpd-dev zlib1g-dev libmaxminddb-dev libmaxmind-db-writer-perl
    clang libclang-rt-14-dev
    nodejs
    jq
    # bench/ingest.sh: the load generator and the baseline server (nginx-light brings the echo
    # module; the bench runs nginx as its own foreground process, not the system service)
    wrk nginx-light curl
)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# npm: Debian packages it apart from nodejs; a nodejs that brings its own npm needs nothing.
command -v npm >/dev/null 2>&1 || missing+=(npm)

install_debian() {
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
}
[ ${#missing[@]} -eq 0 ] || install_debian

# npm packages of the test suites (package.json, locked by package-lock.json), installed into
# node_modules/ when it is missing or older than the lock file.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$root/node_modules" ] || [ "$root/package-lock.json" -nt "$root/node_modules/.package-lock.json" ]; then
    echo "deps: npm ci"
    (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
fi
