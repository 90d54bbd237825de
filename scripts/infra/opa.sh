#!/usr/bin/env bash
# Open Policy Agent, built from its module with the machine's Go into .infra/bin.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OPA_VERSION=v1.22.3
if stamp_matches opa "$OPA_VERSION" && [ -x "$INFRA_BIN/opa" ]; then
  infra_log "opa $OPA_VERSION cached"
  exit 0
fi
infra_log "building opa $OPA_VERSION"
GOBIN="$INFRA_BIN" GOFLAGS=-buildvcs=false go install "github.com/open-policy-agent/opa@$OPA_VERSION"
# Captured first: `grep -q` closing the pipe early would fail the pipeline under pipefail.
built="$("$INFRA_BIN/opa" version)"
grep -qx "Version: ${OPA_VERSION#v}" <<<"$built" || { infra_log "opa version mismatch: $built"; exit 1; }
write_stamp opa "$OPA_VERSION"
