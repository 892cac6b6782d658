#!/usr/bin/env bash
# Known-vulnerability audit of the Python environment the service runs in (pip-audit, PyPA).
#   scripts/audit.sh [extra pip-audit args]     e.g. --format json -o audit.json
# Audits the installed packages of the current interpreter (the project's environment), not a
# requirements file. Exit status: 0 clean, 1 vulnerabilities found, 2 audit could not run
# or was incomplete (e.g. the vulnerability service at pypi.org is unreachable offline: pip-audit
# then skips every package as "not found on PyPI" and still says "No known vulnerabilities found").
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -m pip_audit --version >/dev/null 2>&1; then
  echo "pip-audit is not installed; installing it (pip install pip-audit)" >&2
  "$PYTHON" -m pip install --quiet pip-audit || { echo "could not install pip-audit" >&2; exit 2; }
fi
# --skip-editable: this project itself (installed editable) is not on PyPI.
out="$("$PYTHON" -m pip_audit --progress-spinner off --skip-editable "$@" 2>&1)"
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ] && ! grep -qiE "found [0-9]+ known vulnerabilit" <<<"$out"; then
  echo "audit could not run (rc $rc): vulnerability database unreachable or pip-audit failed" >&2
  exit 2
fi
skipped="$(grep -c "could not be audited" <<<"$out" || true)"
if [ "$skipped" -gt 0 ]; then
  echo "INCOMPLETE: $skipped installed package(s) could not be audited (vulnerability database" \
    "unreachable?); this is not a clean result" >&2
  [ "$rc" -eq 0 ] && exit 2
fi
exit "$rc"
