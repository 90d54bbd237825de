#!/usr/bin/env bash
# The go-spiffe interop harness (interop/go, test code only) built with the
# machine's Go into .infra/bin/go-harness. go.mod/go.sum pin go-spiffe and every
# module; the stamp is a hash of the sources and the Go version, so a run with
# nothing changed only hashes a few files.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
src="$WEAVE_ROOT/interop/go"
if ! command -v go >/dev/null 2>&1; then
  infra_log "go-harness: the Go toolchain (go >= 1.24) is not on PATH"
  exit 1
fi
hash="$(cd "$src" && { go version; cat go.mod go.sum ./*.go; } | sha256sum | cut -d' ' -f1)"
if stamp_matches go-harness "$hash" && [ -x "$INFRA_BIN/go-harness" ]; then
  infra_log "go-harness cached"
  exit 0
fi
infra_log "building go-harness ($(grep 'spiffe/go-spiffe' "$src/go.mod" | xargs))"
# -mod=readonly: a build never edits go.mod/go.sum.
(cd "$src" && GOFLAGS=-buildvcs=false go build -mod=readonly -o "$INFRA_BIN/go-harness.tmp" .)
mv "$INFRA_BIN/go-harness.tmp" "$INFRA_BIN/go-harness"
write_stamp go-harness "$hash"
