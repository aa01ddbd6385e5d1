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

PROXY_BIN=${1:-./proxy}
if [[ ! -x $PROXY_BIN ]]; then
    echo "e2e: proxy binary not found or not executable: $PROXY_BIN" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
PROXY_BIN=$(cd "$(dirname "$PROXY_BIN")" && pwd)/$(basename "$PROXY_BIN")

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }

# --- packages -----------------------------------------------------------------
find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
[[ -n $(find_nginx) ]] || missing+=(nginx)
if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
    echo "e2e: installing ${missing[*]}"
    # Keep the package's service from being started on install.
    policy_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        policy_created=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((policy_created)); then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
NGINX=$(find_nginx)
command -v python3 >/dev/null 2>&1 || { echo "e2e: python3 is needed to pick a free port" >&2; exit 1; }

# --- workspace and cleanup ---------------------------------------------------------
TMP=$(mktemp -d /tmp/ferry-e2e.XXXXXX)
NGINX_PID=""
PROXY_PID=""
cleanup() {
    set +e
    if [[ -n $PROXY_PID ]]; then kill -KILL "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; fi
    if [[ -n $NGINX_PID ]]; then
        kill -TERM "$NGINX_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null
        wait "$NGINX_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- content -------------------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/logs"
# nginx workers may run as an unprivileged user: let them read the content.
chmod 755 "$TMP" "$TMP/www"
head -c 1024 /dev/urandom >"$TMP/www/f1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$TMP/www/f1m.bin"
head -c $((16 * 1024 * 1024)) /dev/urandom >"$TMP/www/f16m.bin"
FILES=(f1k.bin f1m.bin f16m.bin)
chmod 644 "$TMP"/www/*

# --- nginx ---------------------------------------------------------------------
start_nginx() {
    local port=$1
    cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy_tmp;
    fastcgi_temp_path $TMP/fastcgi_tmp;
    uwsgi_temp_path $TMP/uwsgi_tmp;
    scgi_temp_path $TMP/scgi_tmp;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 1000;
    server {
        listen 127.0.0.1:$port;
        root $TMP/www;
    }
}
EOF
    local eflag=()
    if "$NGINX" -h 2>&1 | grep -q -- '-e filename'; then eflag=(-e "$TMP/logs/error.log"); fi
    "$NGINX" "${eflag[@]}" -p "$TMP" -c "$TMP/nginx.conf" >"$TMP/logs/nginx.out" 2>&1 &
    NGINX_PID=$!
    for _ in $(seq 100); do
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/f1k.bin"; then return 0; fi
        if ! kill -0 "$NGINX_PID" 2>/dev/null; then wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=""; return 1; fi
        sleep 0.1
    done
    return 1
}

NGINX_PORT=""
for _ in 1 2 3 4 5; do
    port=$(free_port)
    if start_nginx "$port"; then NGINX_PORT=$port; break; fi
    if [[ -n $NGINX_PID ]]; then kill -KILL "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=""; fi
done
if [[ -z $NGINX_PORT ]]; then
    echo "e2e: nginx did not start" >&2
    cat "$TMP/logs/error.log" "$TMP/logs/nginx.out" 2>/dev/null >&2 || true
    echo "0 passed, 1 failed"
    exit 1
fi
echo "e2e: nginx $NGINX_PID on 127.0.0.1:$NGINX_PORT"

# --- the proxy, per splice mode -------------------------------------------------
start_proxy() {
    local mode=$1 log=$TMP/logs/proxy-$1.log
    "$PROXY_BIN" -l 127.0.0.1 -p 0 -b 127.0.0.1 -P "$NGINX_PORT" -w 1 --max-conns 64 --splice "$mode" 2>"$log" &
    PROXY_PID=$!
    PROXY_ADDR=""
    for _ in $(seq 100); do
        PROXY_ADDR=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
        [[ -n $PROXY_ADDR ]] && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

stop_proxy() {
    local mode=$1 status=0
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PROXY_PID" 2>/dev/null; then
        fail "--splice $mode: proxy did not exit within 10 s of SIGTERM"
        kill -KILL "$PROXY_PID" 2>/dev/null || true
    fi
    wait "$PROXY_PID" 2>/dev/null || status=$?
    PROXY_PID=""
    if ((status == 0)); then pass "--splice $mode: SIGTERM exits 0"; else fail "--splice $mode: SIGTERM exit status $status"; fi
    if grep -q 'ferry: report end' "$TMP/logs/proxy-$mode.log"; then
        pass "--splice $mode: final report printed"
    else
        fail "--splice $mode: no final report at exit"
    fi
}

for mode in on off auto; do
    if ! start_proxy "$mode"; then
        fail "--splice $mode: proxy did not print its listening line"
        cat "$TMP/logs/proxy-$mode.log" >&2 || true
        if [[ -n $PROXY_PID ]]; then kill -KILL "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=""; fi
        continue
    fi
    echo "e2e: --splice $mode: proxy $PROXY_PID on $PROXY_ADDR"
    # One request per connection.
    for f in "${FILES[@]}"; do
        out=$TMP/out-$mode-$f
        if curl -sS --fail --max-time 60 -o "$out" "http://$PROXY_ADDR/$f"; then
            want=$(sha256sum <"$TMP/www/$f" | cut -d' ' -f1)
            got=$(sha256sum <"$out" | cut -d' ' -f1)
            if [[ $want == "$got" ]]; then pass "--splice $mode: GET /$f"; else fail "--splice $mode: GET /$f sha256 differs"; fi
        else
            fail "--splice $mode: GET /$f: curl failed"
        fi
        rm -f "$out"
    done
    # Several requests on one keep-alive connection.
    args=()
    for f in "${FILES[@]}"; do args+=(-o "$TMP/ka-$mode-$f" "http://$PROXY_ADDR/$f"); done
    if curl -sS --fail --max-time 60 "${args[@]}"; then
        ok=1
        for f in "${FILES[@]}"; do
            cmp -s "$TMP/www/$f" "$TMP/ka-$mode-$f" || ok=0
        done
        if ((ok)); then pass "--splice $mode: 3 GETs on one keep-alive connection"; else fail "--splice $mode: keep-alive GETs differ"; fi
    else
        fail "--splice $mode: keep-alive GETs: curl failed"
    fi
    rm -f "$TMP"/ka-"$mode"-*
    stop_proxy "$mode"
done

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
