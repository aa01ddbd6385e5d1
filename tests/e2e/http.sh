#!/usr/bin/env bash
# End-to-end, HTTP mode: curl -> proxy -m http -> nginx, and -> Apache httpd,
# on 127.0.0.1. Checks, for each backend: GETs byte-exact (sha256) with
# --splice on and off, several GETs on one keep-alive client connection,
# backend connections reused across client connections (the backend's access
# log shows far fewer connections than requests), HEAD and 304 followed by
# another request on the same connection, and a 1 MiB upload byte-exact
# (POST to a CGI on Apache that hashes its input, PUT through WebDAV on
# nginx); then a clean SIGTERM with a final report.
#
# Installs curl, nginx and apache2 if missing (apt-get update only then; with
# a policy-rc.d that keeps the packages' services from starting), runs every
# server from a config written under a temp dir on a free port, and stops
# what it started by PID. No system service is started or left running.
#
# Usage: tests/e2e/http.sh [PATH_TO_PROXY]   (default ./proxy)
# Last line: "N passed, N failed"; exit status non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

e2e_init e2e-http "${1:-./proxy}"

# --- packages, workspace and cleanup ---------------------------------------------
e2e_install curl nginx apache2
NGINX=$(find_nginx)
APACHE=$(find_apache)
e2e_workspace ferry-e2e-http

# --- content -------------------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/logs" "$TMP/cgi" "$TMP/dav" "$TMP/apache/run" "$TMP/apache/lock"
# Server workers may run as an unprivileged user: let them read the content
# (and, for WebDAV, write the upload directory).
chmod 755 "$TMP" "$TMP/www" "$TMP/cgi" "$TMP/apache"
chmod 1777 "$TMP/dav" "$TMP/logs" "$TMP/apache/run" "$TMP/apache/lock"
e2e_content
head -c $((1024 * 1024)) /dev/urandom >"$TMP/upload.bin"
UPLOAD_SHA=$(sha "$TMP/upload.bin")
# A CGI that answers the sha256 of the request body (Apache sends it chunked).
cat >"$TMP/cgi/sha256" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
sha256sum | cut -d' ' -f1
EOF
chmod 755 "$TMP/cgi/sha256"

# --- nginx ---------------------------------------------------------------------
start_nginx() {
    e2e_nginx "$1" "    log_format conn '\$connection \$connection_requests \"\$request\" \$status \$body_bytes_sent';
    access_log $TMP/logs/nginx-access.log conn;" "        location /dav/ {
            root $TMP;
            dav_methods PUT;
            client_max_body_size 64m;
        }"
}

# --- Apache httpd ---------------------------------------------------------------
start_apache() {
    local port=$1 userconf=""
    if [[ $(id -u) -eq 0 ]] && id www-data >/dev/null 2>&1; then
        userconf=$'User www-data\nGroup www-data'
    fi
    cat >"$TMP/apache/httpd.conf" <<EOF
ServerRoot "$TMP/apache"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$TMP/apache/run/httpd.pid"
DefaultRuntimeDir "$TMP/apache/run"
Mutex file:$TMP/apache/lock default
ErrorLog "$TMP/logs/apache-error.log"
LogLevel warn
LoadModule mpm_prefork_module $APACHE_MODDIR/mod_mpm_prefork.so
LoadModule authz_core_module $APACHE_MODDIR/mod_authz_core.so
LoadModule mime_module $APACHE_MODDIR/mod_mime.so
LoadModule alias_module $APACHE_MODDIR/mod_alias.so
LoadModule cgi_module $APACHE_MODDIR/mod_cgi.so
$userconf
StartServers 2
MinSpareServers 2
MaxSpareServers 4
MaxRequestWorkers 16
TypesConfig /etc/mime.types
DocumentRoot "$TMP/www"
<Directory />
    Require all denied
</Directory>
<Directory "$TMP/www">
    Require all granted
</Directory>
ScriptAlias /cgi/ "$TMP/cgi/"
<Directory "$TMP/cgi">
    Require all granted
</Directory>
KeepAlive On
MaxKeepAliveRequests 1000
KeepAliveTimeout 10
EnableSendfile On
# Client port and the keep-alive request index (0 = first on its connection).
LogFormat "%{remote}p %k \"%r\" %>s %b" conn
CustomLog "$TMP/logs/apache-access.log" conn
EOF
    # Its own session: on SIGTERM the prefork parent signals its whole
    # process group, which must not include this script. (In a script without
    # job control setsid execs in place, so $! is Apache's PID.)
    setsid env APACHE_RUN_DIR="$TMP/apache/run" APACHE_LOCK_DIR="$TMP/apache/lock" \
        APACHE_LOG_DIR="$TMP/logs" APACHE_PID_FILE="$TMP/apache/run/httpd.pid" \
        APACHE_RUN_USER=www-data APACHE_RUN_GROUP=www-data LANG=C \
        "$APACHE" -d "$TMP/apache" -f "$TMP/apache/httpd.conf" -DFOREGROUND \
        >"$TMP/logs/apache.out" 2>&1 &
    APACHE_PID=$!
    e2e_wait_http "$port" APACHE_PID
}

e2e_start_on_free_port NGINX_PORT start_nginx NGINX_PID || true
e2e_start_on_free_port APACHE_PORT start_apache APACHE_PID || true
if [[ -z $NGINX_PORT ]]; then
    fail "nginx did not start"
    cat "$TMP/logs/nginx-error.log" "$TMP/logs/nginx.out" 2>/dev/null >&2 || true
else
    echo "e2e-http: nginx $NGINX_PID on 127.0.0.1:$NGINX_PORT"
fi
if [[ -z $APACHE_PORT ]]; then
    fail "apache did not start"
    cat "$TMP/logs/apache-error.log" "$TMP/logs/apache.out" 2>/dev/null >&2 || true
else
    echo "e2e-http: apache $APACHE_PID on 127.0.0.1:$APACHE_PORT"
fi

# --- the proxy -----------------------------------------------------------------------

# e2e_stop_proxy, then the final report's backend reuse and 5xx count.
stop_proxy() {
    local tag=$1
    e2e_stop_proxy "$tag"
    if ((PROXY_REPORTED)); then
        local hits fivexx
        hits=$(metric "$PROXY_LOG" backend_pool_hits)
        fivexx=$(metric "$PROXY_LOG" http_responses_5xx)
        if [[ ${hits:-0} -gt 0 ]]; then pass "$tag: backend_pool_hits $hits"; else fail "$tag: backend_pool_hits ${hits:-missing}"; fi
        if [[ ${fivexx:-1} -eq 0 ]]; then pass "$tag: no 5xx"; else fail "$tag: http_responses_5xx ${fivexx:-missing}"; fi
    fi
}

# New backend connections and requests in the lines of access log $1 after
# line $2: a request opened its connection when it is the first on it
# (nginx \$connection_requests == 1, Apache %k == 0; field 2 in both logs).
log_counts() {
    local log=$1 from=$2
    tail -n +$((from + 1)) "$log" | awk -v first="$3" '
        { n++; if ($2 == first) c++ }
        END { printf "%d %d\n", c + 0, n + 0 }'
}

log_lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

run_suite() {
    local server=$1 port=$2 splice=$3 log=$4
    local tag="$server --splice $splice"
    e2e_start_proxy "$tag" "$TMP/logs/proxy-$server-$splice.log" -m http -l 127.0.0.1 -p 0 \
        --backend "127.0.0.1:$port" -w 1 --max-conns 64 --splice "$splice" || return 0
    echo "e2e-http: $tag: proxy $PROXY_PID on $PROXY_ADDR"
    local base="http://$PROXY_ADDR"

    # One request per client connection, byte-exact.
    e2e_check_gets "$tag" "$base"

    # Several requests on one keep-alive client connection.
    local args=() ok=1
    for f in "${FILES[@]}" "${FILES[@]}"; do args+=(-o "$TMP/ka-$f" "$base/$f"); done
    if curl -sS --fail --max-time 60 -w '%{num_connects}\n' "${args[@]}" >"$TMP/ka.connects"; then
        for f in "${FILES[@]}"; do cmp -s "$TMP/www/$f" "$TMP/ka-$f" || ok=0; done
        local connects
        connects=$(awk '{ s += $1 } END { print s + 0 }' "$TMP/ka.connects")
        if ((ok && connects == 1)); then
            pass "$tag: 6 GETs on one keep-alive client connection"
        else
            fail "$tag: keep-alive GETs: byte-exact $ok, client connections $connects (want 1)"
        fi
    else
        fail "$tag: keep-alive GETs: curl failed"
    fi
    rm -f "$TMP"/ka-*

    # Backend connections reused across 20 client connections.
    local before counts conns reqs failed_curl=0
    before=$(log_lines "$log")
    for i in $(seq 20); do
        curl -sS --fail --max-time 30 -o /dev/null "$base/f1k.bin?client=$i" || failed_curl=1
    done
    sleep 0.2
    local first=1
    if [[ $server == apache ]]; then first=0; fi
    read -r conns reqs < <(log_counts "$log" "$before" "$first")
    if ((failed_curl == 0 && reqs == 20 && conns <= 2)); then
        pass "$tag: 20 client connections opened $conns new backend connection(s)"
    else
        fail "$tag: reuse: curl failures $failed_curl, backend saw $reqs requests on $conns new connections (want 20 on <= 2)"
    fi
    # And over the whole run so far: far fewer connections than requests.
    read -r conns reqs < <(log_counts "$log" 0 "$first")
    if ((reqs >= 20 && conns * 5 <= reqs)); then
        pass "$tag: backend log: $reqs requests on $conns connections"
    else
        fail "$tag: backend log: $reqs requests on $conns connections (want at most one per 5)"
    fi

    # HEAD and 304 (bodyless whatever the length says), then a GET on the
    # same client connection.
    local codes
    if codes=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code} %{num_connects}\n' -I "$base/f1m.bin" \
        --next -sS --max-time 30 -o /dev/null -w '%{http_code} %{num_connects}\n' -z "$TMP/www/f1m.bin" "$base/f1m.bin" \
        --next -sS --max-time 30 -o "$TMP/after.bin" -w '%{http_code} %{num_connects}\n' "$base/f1m.bin"); then
        codes=$(echo "$codes" | tr '\n' ' ')
        if [[ $codes == "200 1 304 0 200 0 " ]] && cmp -s "$TMP/www/f1m.bin" "$TMP/after.bin"; then
            pass "$tag: HEAD, 304, then GET on one connection"
        else
            fail "$tag: HEAD/304/GET: got '$codes' (want '200 1 304 0 200 0 '), or the GET differs"
        fi
    else
        fail "$tag: HEAD/304/GET: curl failed"
    fi
    local hlen
    hlen=$(curl -sS --max-time 30 -I "$base/f16m.bin" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" { print $2 }')
    if [[ $hlen == $((16 * 1024 * 1024)) ]]; then pass "$tag: HEAD keeps Content-Length"; else fail "$tag: HEAD Content-Length '$hlen'"; fi
    rm -f "$TMP/after.bin"

    # A 1 MiB upload, byte-exact.
    if [[ $server == apache ]]; then
        local got
        if got=$(curl -sS --fail --max-time 60 -H 'Content-Type: application/octet-stream' \
            --data-binary "@$TMP/upload.bin" "$base/cgi/sha256"); then
            if [[ $got == "$UPLOAD_SHA" ]]; then pass "$tag: POST 1 MiB (CGI sha256, chunked response)"; else fail "$tag: POST 1 MiB: CGI saw sha256 '$got'"; fi
        else
            fail "$tag: POST 1 MiB: curl failed"
        fi
        # Expect: 100-continue (curl sends it for large bodies by default).
        if got=$(curl -sS --fail --max-time 60 -H 'Expect: 100-continue' \
            --data-binary "@$TMP/upload.bin" "$base/cgi/sha256"); then
            if [[ $got == "$UPLOAD_SHA" ]]; then pass "$tag: POST 1 MiB with Expect: 100-continue"; else fail "$tag: POST with Expect: CGI saw '$got'"; fi
        else
            fail "$tag: POST with Expect: 100-continue: curl failed"
        fi
    else
        local name="up-$splice.bin"
        rm -f "$TMP/dav/$name"
        local code
        code=$(curl -sS --max-time 60 -o /dev/null -w '%{http_code}' -T "$TMP/upload.bin" "$base/dav/$name" || echo "curl-failed")
        if [[ $code == 201 || $code == 204 ]] && [[ -f $TMP/dav/$name ]] && [[ $(sha "$TMP/dav/$name") == "$UPLOAD_SHA" ]]; then
            pass "$tag: PUT 1 MiB (WebDAV, stored byte-exact)"
        else
            fail "$tag: PUT 1 MiB: status $code, stored file $(ls -l "$TMP/dav/$name" 2>&1)"
        fi
        if curl -sS --fail --max-time 60 -o "$TMP/back.bin" "$base/dav/$name" && cmp -s "$TMP/upload.bin" "$TMP/back.bin"; then
            pass "$tag: GET the uploaded 1 MiB back"
        else
            fail "$tag: GET the uploaded 1 MiB back differs"
        fi
        rm -f "$TMP/back.bin"
    fi

    stop_proxy "$tag"
}

if [[ -n $NGINX_PORT ]]; then
    for splice in on off; do run_suite nginx "$NGINX_PORT" "$splice" "$TMP/logs/nginx-access.log"; done
fi
if [[ -n $APACHE_PORT ]]; then
    for splice in on off; do run_suite apache "$APACHE_PORT" "$splice" "$TMP/logs/apache-access.log"; done
fi

e2e_summary
