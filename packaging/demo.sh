#!/usr/bin/env bash
# Installs cc-task into .venv and runs a small demo task at the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q .
export CC_TASK_STATUS_FILE="${CC_TASK_STATUS_FILE:-/tmp/cc-task-demo-report.json}"
set +e
.venv/bin/cc-task --log-format "${CC_TASK_LOG_FORMAT:-text}" --timeout 1m --command \
  'echo "hello from a Clever task on $(uname -n)"; for i in 1 2 3; do echo "step $i"; done; echo "a line on stderr" >&2'
status=$?
set -e
echo "exit status: $status; the report is in $CC_TASK_STATUS_FILE:"
cat "$CC_TASK_STATUS_FILE"
exit "$status"
