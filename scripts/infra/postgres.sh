#!/usr/bin/env bash
# PostgreSQL 15 server binaries (initdb, pg_ctl, postgres) for the private test
# clusters that interop/infra.ts starts. Nothing runs as a system service.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
apt_install_missing postgresql-15 postgresql-client-15
[ -x /usr/lib/postgresql/15/bin/initdb ] || { infra_log "initdb missing after install"; exit 1; }
infra_log "postgres: $(/usr/lib/postgresql/15/bin/postgres --version)"
