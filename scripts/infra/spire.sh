#!/usr/bin/env bash
# SPIRE server and agent. They are programs inside the github.com/spiffe/spire module,
# which cannot be built with `go install <pkg>@<version>`; a throwaway module under
# .infra/ pins them as tools (`go get -tool`) and `go install` builds them from there.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SPIRE_VERSION=v1.13.3
if stamp_matches spire "$SPIRE_VERSION" && [ -x "$INFRA_BIN/spire-server" ] && [ -x "$INFRA_BIN/spire-agent" ]; then
  infra_log "spire $SPIRE_VERSION cached"
  exit 0
fi
# SPIRE's SQLite datastore is cgo: the build needs a C compiler.
apt_install_missing gcc libc6-dev
infra_log "building spire-server and spire-agent $SPIRE_VERSION"
mod="$INFRA_DIR/spire-tools"
rm -rf "$mod"
mkdir -p "$mod"
(
  cd "$mod"
  go mod init weave.local/spire-tools >/dev/null 2>&1
  go get -tool "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION"
  go get -tool "github.com/spiffe/spire/cmd/spire-agent@$SPIRE_VERSION"
  GOBIN="$INFRA_BIN" GOFLAGS=-buildvcs=false go install \
    github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
)
"$INFRA_BIN/spire-server" --version >/dev/null 2>&1 || "$INFRA_BIN/spire-server" --help >/dev/null 2>&1 || true
write_stamp spire "$SPIRE_VERSION"
