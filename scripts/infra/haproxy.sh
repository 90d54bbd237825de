#!/usr/bin/env bash
# HAProxy from Debian; tests start their own instance with their own config.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
apt_install_missing haproxy
infra_log "haproxy: $(haproxy -v | head -1)"
