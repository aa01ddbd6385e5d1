# Shared pieces of the end-to-end scripts (run.sh, http.sh). Source it after
# `set -euo pipefail`:
#
#   source "$(dirname "$0")/lib.sh"
#   e2e_init NAME "${1:-./proxy}"    # PROXY_BIN, counters, PID variables
#   e2e_install curl nginx ...       # only what is missing
#   e2e_workspace ferry-e2e-...      # TMP, trap e2e_cleanup EXIT
#   ...
#   e2e_summary                      # last line; non-zero on any failure
#
# Everything started is recorded in PROXY_PID, NGINX_PID or APACHE_PID and
# stopped by that PID, by the caller or at the latest by e2e_cleanup.

# --- setup and counters ------------------------------------------------------------

# e2e_init NAME PATH_TO_PROXY: NAME prefixes the script's own messages.
e2e_init() {
    E2E_NAME=$1
    PROXY_BIN=$2
    if [[ ! -x $PROXY_BIN ]]; then
        echo "$E2E_NAME: proxy binary not found or not executable: $PROXY_BIN" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
    PROXY_BIN=$(cd "$(dirname "$PROXY_BIN")" && pwd)/$(basename "$PROXY_BIN")
    PASSED=0
    FAILED=0
    TMP=""
    PROXY_PID=""
    PROXY_ADDR=""
    PROXY_LOG=""
    PROXY_REPORTED=0
    NGINX_PID=""
    APACHE_PID=""
}

pass() { PASSED=$((PASSED + 1)); echo "ok   $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }

# Prints "N passed, N failed"; its status is the script's (non-zero on failure).
e2e_summary() {
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

# --- packages -----------------------------------------------------------------------
APACHE_MODDIR=/usr/lib/apache2/modules
find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
find_apache() { command -v apache2 2>/dev/null || { [[ -x /usr/sbin/apache2 ]] && echo /usr/sbin/apache2; } || true; }

# Whether package $1 is already usable.
e2e_have() {
    case $1 in
        nginx) [[ -n $(find_nginx) ]] ;;
        apache2) [[ -n $(find_apache) && -e $APACHE_MODDIR/mod_cgi.so ]] ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}

# e2e_install PKG...: installs those of PKG that are missing (apt-get update
# only then), with a policy-rc.d that keeps the packages' services from being
# started on install (removed again if this created it).
e2e_install() {
    local missing=() pkg
    for pkg in "$@"; do
        e2e_have "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    local SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
    echo "$E2E_NAME: installing ${missing[*]}"
    local policy_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        policy_created=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((policy_created)); then $SUDO rm -f /usr/sbin/policy-rc.d; fi
}

# e2e_install_python MODULE PIP_NAME DEB_NAME: makes `import MODULE` work for
# python3 if it does not: pip (quietly; also where the system Python is
# "externally managed"), else Debian's package.
e2e_install_python() {
    local module=$1 pip_name=$2 deb=$3
    python3 -c "import $module" 2>/dev/null && return 0
    echo "$E2E_NAME: installing $pip_name for python3"
    python3 -m pip install -q --disable-pip-version-check "$pip_name" >/dev/null 2>&1 ||
        python3 -m pip install -q --disable-pip-version-check --break-system-packages "$pip_name" >/dev/null 2>&1 ||
        e2e_install_deb "$deb" || true
    python3 -c "import $module" 2>/dev/null
}

# e2e_install_deb PKG: apt-get install PKG (after an update).
e2e_install_deb() {
    local SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

# --- workspace and cleanup -----------------------------------------------------------

# e2e_workspace PREFIX: TMP=/tmp/PREFIX.XXXXXX, removed (and everything
# started stopped) on exit.
e2e_workspace() {
    command -v python3 >/dev/null 2>&1 || { echo "$E2E_NAME: python3 is needed to pick a free port" >&2; exit 1; }
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    trap e2e_cleanup EXIT
}

# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# kill_pid PID: SIGKILL at once; reaps it.
kill_pid() {
    [[ -n $1 ]] || return 0
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

e2e_cleanup() {
    set +e
    kill_pid "$PROXY_PID"
    stop_pid "$NGINX_PID"
    stop_pid "$APACHE_PID"
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

# The files served: FILES under $TMP/www (which must exist), readable by all.
e2e_content() {
    head -c 1024 /dev/urandom >"$TMP/www/f1k.bin"
    head -c $((1024 * 1024)) /dev/urandom >"$TMP/www/f1m.bin"
    head -c $((16 * 1024 * 1024)) /dev/urandom >"$TMP/www/f16m.bin"
    FILES=(f1k.bin f1m.bin f16m.bin)
    chmod 644 "$TMP"/www/*
}

# --- backends ----------------------------------------------------------------------------

# e2e_wait_http PORT PIDVAR: waits up to 10 s for the server whose PID is in
# the variable named PIDVAR to serve /f1k.bin on PORT; if it exits first, reaps
# it, clears PIDVAR and fails.
e2e_wait_http() {
    local port=$1 pidvar=$2
    for _ in $(seq 100); do
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/f1k.bin"; then return 0; fi
        if ! kill -0 "${!pidvar}" 2>/dev/null; then wait "${!pidvar}" 2>/dev/null || true; printf -v "$pidvar" ''; return 1; fi
        sleep 0.1
    done
    return 1
}

# e2e_nginx PORT HTTP_LINES SERVER_LINES: write $TMP/nginx.conf for nginx
# serving $TMP/www on 127.0.0.1:PORT (one worker in the foreground, its files
# under $TMP, errors in $TMP/logs/nginx-error.log) and start it.
# HTTP_LINES go into the http block (logging), SERVER_LINES into the server
# block (more listens, locations), both as given.
e2e_nginx() {
    local port=$1 http_lines=$2 server_lines=$3
    cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $TMP/nginx.pid;
error_log $TMP/logs/nginx-error.log warn;
events { worker_connections 256; }
http {
$http_lines
    client_body_temp_path $TMP/nginx-body;
    proxy_temp_path $TMP/nginx-proxy;
    fastcgi_temp_path $TMP/nginx-fastcgi;
    uwsgi_temp_path $TMP/nginx-uwsgi;
    scgi_temp_path $TMP/nginx-scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 1000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$port;
        root $TMP/www;
$server_lines
    }
}
EOF
    e2e_start_nginx "$port" "$TMP/nginx.conf" "$TMP/logs/nginx-error.log"
}

# e2e_nginx_or_exit TAG START_FN: start nginx on a free port with START_FN
# (sets NGINX_PORT and NGINX_PID), or print its logs and end the script as
# one failed check.
e2e_nginx_or_exit() {
    local tag=$1 start=$2
    if ! e2e_start_on_free_port NGINX_PORT "$start" NGINX_PID; then
        echo "$tag: nginx did not start" >&2
        cat "$TMP/logs/nginx-error.log" "$TMP/logs/nginx.out" 2>/dev/null >&2 || true
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "$tag: nginx $NGINX_PID on 127.0.0.1:$NGINX_PORT"
}

# metric LOG NAME: the value of NAME in the last ferry report in LOG.
metric() { awk -v k="$2" '$1 == k { v = $2 } END { print v }' "$1"; }

# e2e_start_nginx PORT CONF ERRLOG: runs $NGINX (in the foreground of its
# config, prefix $TMP) in the background as NGINX_PID; waits until it serves.
e2e_start_nginx() {
    local port=$1 conf=$2 errlog=$3 eflag=()
    if "$NGINX" -h 2>&1 | grep -q -- '-e filename'; then eflag=(-e "$errlog"); fi
    "$NGINX" "${eflag[@]}" -p "$TMP" -c "$conf" >"$TMP/logs/nginx.out" 2>&1 &
    NGINX_PID=$!
    e2e_wait_http "$port" NGINX_PID
}

# e2e_start_on_free_port PORTVAR START_FN PIDVAR: up to 5 tries of START_FN
# on a free port, stopping what a failed try left behind; PORTVAR is the port
# it started on, or empty.
e2e_start_on_free_port() {
    local portvar=$1 start=$2 pidvar=$3 p
    printf -v "$portvar" ''
    for _ in 1 2 3 4 5; do
        p=$(free_port)
        if "$start" "$p"; then printf -v "$portvar" '%s' "$p"; return 0; fi
        stop_pid "${!pidvar}"; printf -v "$pidvar" ''
    done
    return 1
}

# --- the proxy ---------------------------------------------------------------------------

# e2e_start_proxy TAG LOG ARG...: runs $PROXY_BIN ARG... with stderr to LOG
# and waits for its "ferry: listening on ADDR" line (PROXY_ADDR). On failure
# reports it under TAG, shows the log, kills the proxy and returns 1.
e2e_start_proxy() {
    local tag=$1
    PROXY_LOG=$2
    shift 2
    "$PROXY_BIN" "$@" 2>"$PROXY_LOG" &
    PROXY_PID=$!
    PROXY_ADDR=""
    for _ in $(seq 100); do
        PROXY_ADDR=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$PROXY_LOG" | head -n 1)
        [[ -n $PROXY_ADDR ]] && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.1
    done
    fail "$tag: proxy did not print its listening line"
    cat "$PROXY_LOG" >&2 || true
    kill_pid "$PROXY_PID"
    PROXY_PID=""
    return 1
}

# e2e_stop_proxy TAG: SIGTERM; checks it exits 0 within 10 s and printed its
# final report (PROXY_REPORTED=1 if so).
e2e_stop_proxy() {
    local tag=$1 status=0
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PROXY_PID" 2>/dev/null; then
        fail "$tag: proxy did not exit within 10 s of SIGTERM"
        kill -KILL "$PROXY_PID" 2>/dev/null || true
    fi
    wait "$PROXY_PID" 2>/dev/null || status=$?
    PROXY_PID=""
    if ((status == 0)); then pass "$tag: SIGTERM exits 0"; else fail "$tag: SIGTERM exit status $status"; fi
    PROXY_REPORTED=0
    if grep -q 'ferry: report end' "$PROXY_LOG"; then
        PROXY_REPORTED=1
        pass "$tag: final report printed"
    else
        fail "$tag: no final report at exit"
    fi
}

# e2e_check_gets TAG BASE_URL: each of FILES on its own connection, byte-exact.
e2e_check_gets() {
    local tag=$1 base=$2 f out
    for f in "${FILES[@]}"; do
        out=$TMP/out-$f
        if curl -sS --fail --max-time 60 -o "$out" "$base/$f"; then
            if [[ $(sha "$TMP/www/$f") == "$(sha "$out")" ]]; then pass "$tag: GET /$f"; else fail "$tag: GET /$f sha256 differs"; fi
        else
            fail "$tag: GET /$f: curl failed"
        fi
        rm -f "$out"
    done
}
