#!/usr/bin/env bash
# Installs every real component the interop suite needs (PostgreSQL, HAProxy, OPA,
# SPIRE, the go-spiffe harness, the Python A2A SDK) into the git-ignored .infra/
# folder. Idempotent: a second run finds everything cached and takes seconds.
# Go builds also reuse Go's own module and build caches in $HOME.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
start=$SECONDS
for component in postgres haproxy opa spire go-harness python; do
  script="$here/$component.sh"
  if [ -f "$script" ]; then
    t=$SECONDS
    bash "$script"
    printf '[infra] %s ready (%ss)\n' "$component" "$((SECONDS - t))" >&2
  fi
done
printf '[infra] setup done in %ss\n' "$((SECONDS - start))" >&2
