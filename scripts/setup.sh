# shellcheck shell=bash
# Sourced by scripts/run and scripts/test (not run on its own): makes .venv, installs the
# project, finds or starts PostgreSQL and Redis (exporting DATABASE_URL and REDIS_URL, and
# setting MOCK_COMMS_STARTED to what it started), then migrates and seeds the API keys.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mc_log() { printf 'mock-comms: %s\n' "$*" >&2; }
mc_python_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; }

# .env first, so that POSTGRES_* / REDIS_* / DATABASE_URL / REDIS_URL in it are honoured; the
# environment wins over it (scripts/dotenv.sh).
# shellcheck source=scripts/dotenv.sh
. scripts/dotenv.sh
if [ -f .env ]; then
  mc_load_dotenv .env
fi

if [ ! -x .venv/bin/python ]; then
  mc_py=""
  for mc_cand in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
    if command -v "$mc_cand" >/dev/null 2>&1 && mc_python_ok "$mc_cand"; then
      mc_py=$mc_cand
      break
    fi
  done
  if [ -z "$mc_py" ]; then
    mc_log "Python >= 3.11 is required (python3 is: $(python3 -V 2>&1 || echo 'not found'))."
    mc_log "Install it (e.g. apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11."
    exit 1
  fi
  mc_log "creating .venv with $mc_py ($("$mc_py" -V 2>&1))"
  if ! "$mc_py" -m venv .venv; then
    mc_log "could not create .venv (on Debian/Ubuntu: apt-get install python3-venv)"
    exit 1
  fi
fi
if ! mc_python_ok .venv/bin/python; then
  mc_log ".venv has $(.venv/bin/python -V 2>&1) but Python >= 3.11 is required: remove .venv and retry"
  exit 1
fi

if [ ! -e .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  mc_log "installing the project with its dev extras into .venv"
  if ! .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[dev]'; then
    mc_log "pip install -e '.[dev]' failed"
    exit 1
  fi
  touch .venv/.installed
fi

VIRTUAL_ENV="$PWD/.venv"
PATH="$VIRTUAL_ENV/bin:$PATH"
export VIRTUAL_ENV PATH

if ! mc_stores="$(.venv/bin/python scripts/stores.py ensure)"; then
  mc_log "PostgreSQL and Redis are needed: see the message above"
  exit 1
fi
eval "$mc_stores"
unset mc_stores

if ! python -m db migrate; then
  mc_log "python -m db migrate failed (DATABASE_URL=$DATABASE_URL)"
  exit 1
fi
if ! python -m db seed-keys; then
  mc_log "python -m db seed-keys failed"
  exit 1
fi
