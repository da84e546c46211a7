#!/usr/bin/env bash
# Builds the wheel + sdist, the single-file executable (shiv) and the Debian package into
# packaging/out/; `bash packaging/build.sh vm` builds the test VM. See packaging/build.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
exec "$PYTHON" packaging/build.py "$@"
