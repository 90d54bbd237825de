# Shared by the scripts in scripts/infra/: where the cache lives and small helpers.
# Sourced, never run. Every component lands in the git-ignored .infra/ folder at the
# repository root so that a second setup run only checks what is already there.
set -euo pipefail

WEAVE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
INFRA_DIR="$WEAVE_ROOT/.infra"
INFRA_BIN="$INFRA_DIR/bin"
mkdir -p "$INFRA_BIN"

infra_log() { printf '[infra] %s\n' "$*" >&2; }

# Installs Debian packages that are missing. `apt-get update` runs at most once per
# setup run (exported marker), and only when something has to be installed, so a
# cached run never touches the network.
apt_install_missing() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  infra_log "apt-get install ${missing[*]}"
  if [ -z "${WEAVE_INFRA_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    export WEAVE_INFRA_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Records which version a cached binary was built from; a stamp that does not match
# the pinned version makes the component rebuild.
stamp_matches() { [ -f "$INFRA_BIN/.$1.version" ] && [ "$(cat "$INFRA_BIN/.$1.version")" = "$2" ]; }
write_stamp() { printf '%s' "$2" >"$INFRA_BIN/.$1.version"; }
