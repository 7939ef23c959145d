#!/usr/bin/env bash
# Installs the Python tools that the API tests drive lguest with, from PyPI, at pinned versions,
# into a virtual environment of the project's own (.build/python-tools, or $LGUEST_PYTHON_TOOLS):
#   schemathesis        property-based tests of the HTTP API against an OpenAPI document
#   firecracker-python  a Firecracker client, run unchanged against lguest
# Idempotent: once the pinned versions are in place, a second run only checks. Prints the
# environment's path. Tests/ApiTests skip (saying so) when this fails, e.g. without PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

pins=(schemathesis==4.32.5 firecracker-python==0.0.5)
venv="${LGUEST_PYTHON_TOOLS:-$PWD/.build/python-tools}"
stamp="$venv/lguest-pins"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${pins[*]}" ]; then
    echo "$venv"
    exit 0
fi
python=$(command -v python3 || true)
if [ -z "$python" ] || ! "$python" -m venv --help >/dev/null 2>&1; then
    echo "python-tools: installing python3-venv" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv >/dev/null \
        || { $SUDO apt-get update >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv >/dev/null; }
    python=$(command -v python3)
fi
echo "python-tools: installing ${pins[*]} into $venv" >&2
if [ -e "$venv" ] && [ ! -e "$venv/pyvenv.cfg" ]; then
    echo "python-tools: $venv exists and is not a Python virtual environment: not replacing it" >&2
    exit 1
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
echo "${pins[*]}" > "$stamp"
echo "$venv"
