#!/usr/bin/env bash
# The official Python A2A SDK (a2a-sdk, pinned in interop/python/requirements.txt)
# with uvicorn and httpx, in a virtual environment at .infra/venv. The stamp is a
# hash of the requirements and the Python version, so a cached run only hashes.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
req="$WEAVE_ROOT/interop/python/requirements.txt"
venv="$INFRA_DIR/venv"
python="${WEAVE_PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  infra_log "python: $python (>= 3.10) is not on PATH"
  exit 1
fi
hash="$({ "$python" --version; cat "$req"; } | sha256sum | cut -d' ' -f1)"
if stamp_matches python-a2a "$hash" && [ -x "$venv/bin/python" ]; then
  infra_log "python a2a-sdk venv cached"
  exit 0
fi
infra_log "creating $venv with $(grep '^a2a-sdk' "$req")"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
"$venv/bin/python" -c 'import a2a, uvicorn, httpx, grpc' || { infra_log "a2a-sdk venv incomplete"; exit 1; }
write_stamp python-a2a "$hash"
