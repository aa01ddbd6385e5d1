#!/usr/bin/env bash
# End-to-end: curl -> proxy -> nginx on 127.0.0.1, for --splice on, off and
# auto; every file must arrive byte-exact (sha256). Installs curl and nginx if
# missing (apt-get update only then; the system nginx service is never
# started), runs everything from a temp dir on ephemeral ports, and stops what
# it started by PID.
#
# Usage: tests/e2e/run.sh [PATH_TO_PROXY]   (default ./proxy)
# Last line: "N passed, N failed"; exit status non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

e2e_init e2e "${1:-./proxy}"

# --- packages, workspace and cleanup ---------------------------------------------
e2e_install curl nginx
NGINX=$(find_nginx)
e2e_workspace ferry-e2e

# --- content -------------------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/logs"
# nginx workers may run as an unprivileged user: let them read the content.
chmod 755 "$TMP" "$TMP/www"
e2e_content

# --- nginx ---------------------------------------------------------------------
start_nginx() { e2e_nginx "$1" "    access_log off;" ""; }

e2e_nginx_or_exit e2e start_nginx

# --- the proxy, per splice mode -------------------------------------------------
for mode in on off auto; do
    tag="--splice $mode"
    e2e_start_proxy "$tag" "$TMP/logs/proxy-$mode.log" \
        -l 127.0.0.1 -p 0 -b 127.0.0.1 -P "$NGINX_PORT" -w 1 --max-conns 64 --splice "$mode" || continue
    echo "e2e: $tag: proxy $PROXY_PID on $PROXY_ADDR"
    # One request per connection.
    e2e_check_gets "$tag" "http://$PROXY_ADDR"
    # Several requests on one keep-alive connection.
    args=()
    for f in "${FILES[@]}"; do args+=(-o "$TMP/ka-$mode-$f" "http://$PROXY_ADDR/$f"); done
    if curl -sS --fail --max-time 60 "${args[@]}"; then
        ok=1
        for f in "${FILES[@]}"; do
            cmp -s "$TMP/www/$f" "$TMP/ka-$mode-$f" || ok=0
        done
        if ((ok)); then pass "$tag: 3 GETs on one keep-alive connection"; else fail "$tag: keep-alive GETs differ"; fi
    else
        fail "$tag: keep-alive GETs: curl failed"
    fi
    rm -f "$TMP"/ka-"$mode"-*
    e2e_stop_proxy "$tag"
done

e2e_summary
