#!/usr/bin/env bash
# End-to-end, forward mode: curl -> proxy -m forward -> nginx on 127.0.0.1,
# with real clients: `curl -x` for plain HTTP in absolute form, `curl -p -x`
# and `https_proxy=` for HTTPS through CONNECT tunnels to nginx with a
# self-signed certificate made here with openssl. For a proxy without
# credentials and one with `--auth`, each with --splice on and off: files
# byte-exact (sha256) both ways, a 64 MiB download through a tunnel and a
# 16 MiB upload through one; with credentials also 407 without them or with
# wrong ones, and curl's 407-then-retry on one connection (--proxy-anyauth);
# refusals (403 for a port, 502 for an unknown host); the credentials in no
# log line (-v and the access log on); the forward counters in the final
# report. Last, the open-proxy refusal at start.
#
# Installs curl, nginx and openssl if missing (apt-get update only then; the
# system nginx service is never started), runs everything from a temp dir on
# free ports, and stops what it started by PID.
#
# Usage: tests/e2e/forward.sh [PATH_TO_PROXY]   (default ./proxy)
# Last line: "N passed, N failed"; exit status non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

e2e_init e2e-forward "${1:-./proxy}"

# --- packages, workspace and cleanup ---------------------------------------------
e2e_install curl nginx openssl
NGINX=$(find_nginx)
e2e_workspace ferry-e2e-forward
# Whatever the caller's environment says, curl talks to the proxy given here.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

USER_NAME=ferryuser
USER_PASS=Fw9-e2e-secret
CREDS="$USER_NAME:$USER_PASS"
CREDS_B64=$(printf '%s' "$CREDS" | base64)

# --- content and certificate ------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/logs" "$TMP/dav" "$TMP/tls"
chmod 755 "$TMP" "$TMP/www" "$TMP/tls"
chmod 1777 "$TMP/dav" "$TMP/logs"
e2e_content
head -c $((64 * 1024 * 1024)) /dev/urandom >"$TMP/www/f64m.bin"
chmod 644 "$TMP/www/f64m.bin"
head -c $((16 * 1024 * 1024)) /dev/urandom >"$TMP/upload.bin"
UPLOAD_SHA=$(sha "$TMP/upload.bin")
if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" >"$TMP/logs/openssl.out" 2>&1; then
    fail "openssl could not make a self-signed certificate"
    cat "$TMP/logs/openssl.out" >&2
    e2e_summary
fi
chmod 644 "$TMP/tls/key.pem" "$TMP/tls/cert.pem"
CACERT=$TMP/tls/cert.pem

# --- nginx: plain HTTP on NGINX_PORT, TLS on TLS_PORT --------------------------------
TLS_PORT=""
start_nginx() {
    local port=$1
    TLS_PORT=$(free_port)
    e2e_nginx "$port" "    access_log $TMP/logs/nginx-access.log;" "        listen 127.0.0.1:$TLS_PORT ssl;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        location /dav/ {
            root $TMP;
            dav_methods PUT;
            client_max_body_size 64m;
        }" || return 1
    # The TLS side answers too.
    for _ in $(seq 50); do
        if curl -s -o /dev/null --max-time 1 --cacert "$CACERT" "https://localhost:$TLS_PORT/f1k.bin"; then return 0; fi
        sleep 0.1
    done
    return 1
}

e2e_start_on_free_port NGINX_PORT start_nginx NGINX_PID || true
if [[ -z $NGINX_PORT ]]; then
    fail "nginx (plain and TLS) did not start"
    cat "$TMP/logs/nginx-error.log" "$TMP/logs/nginx.out" 2>/dev/null >&2 || true
    e2e_summary
fi
echo "e2e-forward: nginx $NGINX_PID on 127.0.0.1:$NGINX_PORT (http) and :$TLS_PORT (https)"

# --- checks ------------------------------------------------------------------------

# check_file TAG FILE OUT: OUT is FILE of the served content, byte-exact.
check_file() {
    local tag=$1 f=$2 out=$3
    if [[ -f $out && $(sha "$TMP/www/$f") == "$(sha "$out")" ]]; then pass "$tag"; else fail "$tag: sha256 differs"; fi
    rm -f "$out"
}

# fetch TAG FILE CURL_ARGS...: curl FILE (URL last in CURL_ARGS) byte-exact.
fetch() {
    local tag=$1 f=$2 out=$TMP/out.bin
    shift 2
    rm -f "$out"
    if curl -sS --fail --max-time 120 -o "$out" "$@"; then
        check_file "$tag" "$f" "$out"
    else
        fail "$tag: curl failed"
    fi
}

# run_suite AUTH SPLICE: AUTH is "auth" (--auth CREDS) or "open" (none).
run_suite() {
    local auth=$1 splice=$2
    local tag="forward $auth --splice $splice"
    local args=(-m forward -l 127.0.0.1 -p 0 -w 1 --max-conns 64 --splice "$splice"
        --connect-ports "$TLS_PORT,$NGINX_PORT" -v --access-log -)
    local U=()
    if [[ $auth == auth ]]; then
        args+=(--auth "$CREDS")
        U=(-U "$CREDS")
    fi
    e2e_start_proxy "$tag" "$TMP/logs/proxy-$auth-$splice.log" "${args[@]}" || return 0
    echo "e2e-forward: $tag: proxy $PROXY_PID on $PROXY_ADDR"
    local proxy="http://$PROXY_ADDR" f code

    # Plain HTTP in absolute form (curl -x), each file on its own connection.
    for f in "${FILES[@]}"; do
        fetch "$tag: curl -x GET /$f" "$f" -x "$proxy" "${U[@]}" "http://127.0.0.1:$NGINX_PORT/$f"
    done
    # Several requests on one client connection.
    local ka=() ok=1 connects
    for f in "${FILES[@]}"; do ka+=(-o "$TMP/ka-$f" "http://127.0.0.1:$NGINX_PORT/$f"); done
    if connects=$(curl -sS --fail --max-time 60 -x "$proxy" "${U[@]}" -w '%{num_connects}\n' "${ka[@]}"); then
        for f in "${FILES[@]}"; do cmp -s "$TMP/www/$f" "$TMP/ka-$f" || ok=0; done
        connects=$(echo "$connects" | awk '{ s += $1 } END { print s + 0 }')
        if ((ok && connects == 1)); then pass "$tag: 3 GETs on one client connection"; else fail "$tag: keep-alive: byte-exact $ok, connections $connects"; fi
    else
        fail "$tag: keep-alive GETs: curl failed"
    fi
    rm -f "$TMP"/ka-*

    # HTTPS through CONNECT: curl -p -x, and https_proxy= from the environment.
    for f in "${FILES[@]}"; do
        fetch "$tag: curl -p -x https GET /$f" "$f" -p -x "$proxy" "${U[@]}" --cacert "$CACERT" \
            "https://localhost:$TLS_PORT/$f"
    done
    local env_proxy=$proxy
    if [[ $auth == auth ]]; then env_proxy="http://$CREDS@$PROXY_ADDR"; fi
    rm -f "$TMP/out.bin"
    if https_proxy=$env_proxy curl -sS --fail --max-time 60 --cacert "$CACERT" -o "$TMP/out.bin" \
        "https://localhost:$TLS_PORT/f1m.bin"; then
        check_file "$tag: https_proxy= GET /f1m.bin" f1m.bin "$TMP/out.bin"
    else
        fail "$tag: https_proxy= GET /f1m.bin: curl failed"
    fi
    # Plain HTTP inside a tunnel (curl -p with an http:// URL).
    fetch "$tag: curl -p -x http GET /f1m.bin through a tunnel" f1m.bin -p -x "$proxy" "${U[@]}" \
        "http://127.0.0.1:$NGINX_PORT/f1m.bin"

    # 64 MiB down and 16 MiB up through tunnels, byte-exact.
    fetch "$tag: 64 MiB through a tunnel" f64m.bin -p -x "$proxy" "${U[@]}" --cacert "$CACERT" \
        "https://localhost:$TLS_PORT/f64m.bin"
    local name="up-$auth-$splice.bin"
    rm -f "$TMP/dav/$name"
    code=$(curl -sS --max-time 120 -o /dev/null -w '%{http_code}' -p -x "$proxy" "${U[@]}" --cacert "$CACERT" \
        -T "$TMP/upload.bin" "https://localhost:$TLS_PORT/dav/$name" || echo curl-failed)
    if [[ $code == 201 || $code == 204 ]] && [[ -f $TMP/dav/$name && $(sha "$TMP/dav/$name") == "$UPLOAD_SHA" ]]; then
        pass "$tag: 16 MiB PUT through a tunnel"
    else
        fail "$tag: 16 MiB PUT through a tunnel: status $code"
    fi
    rm -f "$TMP/dav/$name"

    # Refusals: a port not allowed (403), a name that does not resolve (502).
    code=$(curl -s --max-time 30 -o /dev/null -w '%{http_connect}' -p -x "$proxy" "${U[@]}" \
        "https://localhost:22/" || true)
    if [[ $code == 403 ]]; then pass "$tag: CONNECT to port 22: 403"; else fail "$tag: CONNECT to port 22: '$code' (want 403)"; fi
    code=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -x "$proxy" "${U[@]}" \
        "http://nonexistent.invalid/" || true)
    if [[ $code == 502 ]]; then pass "$tag: unknown host: 502"; else fail "$tag: unknown host: '$code' (want 502)"; fi

    if [[ $auth == auth ]]; then
        # No credentials, wrong ones: 407 asking for Basic, for both forms.
        local out
        out=$(curl -s --max-time 30 -D - -o /dev/null -x "$proxy" "http://127.0.0.1:$NGINX_PORT/f1k.bin" | tr -d '\r' || true)
        if grep -q '^HTTP/1.1 407' <<<"$out" && grep -qi '^Proxy-Authenticate: Basic realm="ferry"' <<<"$out"; then
            pass "$tag: GET without credentials: 407 with Proxy-Authenticate"
        else
            fail "$tag: GET without credentials: $(head -n 1 <<<"$out")"
        fi
        code=$(curl -s --max-time 30 -o /dev/null -w '%{http_connect}' -p -x "$proxy" --cacert "$CACERT" \
            "https://localhost:$TLS_PORT/f1k.bin" || true)
        if [[ $code == 407 ]]; then pass "$tag: CONNECT without credentials: 407"; else fail "$tag: CONNECT without credentials: '$code'"; fi
        code=$(curl -s --max-time 30 -o /dev/null -w '%{http_connect}' -p -x "$proxy" -U "$USER_NAME:wrong" \
            --cacert "$CACERT" "https://localhost:$TLS_PORT/f1k.bin" || true)
        if [[ $code == 407 ]]; then pass "$tag: CONNECT with a wrong password: 407"; else fail "$tag: CONNECT with a wrong password: '$code'"; fi
        code=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -x "$proxy" -U "$USER_NAME:wrong" \
            "http://127.0.0.1:$NGINX_PORT/f1k.bin" || true)
        if [[ $code == 407 ]]; then pass "$tag: GET with a wrong password: 407"; else fail "$tag: GET with a wrong password: '$code'"; fi
        # curl --proxy-anyauth asks without credentials first, then answers
        # the 407 with them on the same connection.
        local got
        got=$(curl -sS --max-time 30 -o "$TMP/out.bin" -w '%{http_code} %{num_connects}' --proxy-anyauth \
            -x "$proxy" -U "$CREDS" "http://127.0.0.1:$NGINX_PORT/f1m.bin" || echo curl-failed)
        if [[ $got == "200 1" ]] && cmp -s "$TMP/www/f1m.bin" "$TMP/out.bin"; then
            pass "$tag: 407 then the retry on the same connection (GET)"
        else
            fail "$tag: 407 then retry (GET): '$got' (want '200 1')"
        fi
        got=$(curl -sS --max-time 30 -o "$TMP/out.bin" -w '%{http_code} %{num_connects}' --proxy-anyauth -p \
            -x "$proxy" -U "$CREDS" --cacert "$CACERT" "https://localhost:$TLS_PORT/f1m.bin" || echo curl-failed)
        if [[ $got == "200 1" ]] && cmp -s "$TMP/www/f1m.bin" "$TMP/out.bin"; then
            pass "$tag: 407 then the retry on the same connection (CONNECT)"
        else
            fail "$tag: 407 then retry (CONNECT): '$got' (want '200 1')"
        fi
        rm -f "$TMP/out.bin"
    fi

    e2e_stop_proxy "$tag"
    if ((PROXY_REPORTED)); then
        local tunnels auth_failures denied fivexx
        tunnels=$(metric "$PROXY_LOG" forward_tunnels)
        auth_failures=$(metric "$PROXY_LOG" forward_auth_failures)
        denied=$(metric "$PROXY_LOG" forward_denied)
        # Tunnels: 3 files, https_proxy=, http in a tunnel, 64 MiB, PUT; and the
        # --proxy-anyauth CONNECT with credentials.
        local want_tunnels=7 want_auth=0
        if [[ $auth == auth ]]; then want_tunnels=8; want_auth=6; fi
        if [[ $tunnels == "$want_tunnels" && $auth_failures == "$want_auth" && $denied == 1 ]]; then
            pass "$tag: report: forward_tunnels $tunnels, forward_auth_failures $auth_failures, forward_denied $denied"
        else
            fail "$tag: report: forward_tunnels $tunnels (want $want_tunnels), forward_auth_failures $auth_failures (want $want_auth), forward_denied $denied (want 1)"
        fi
        local spliced
        spliced=$(metric "$PROXY_LOG" bytes_spliced_backend_to_client)
        if [[ $splice == on && ${spliced:-0} -gt $((64 * 1024 * 1024)) ]] || [[ $splice == off && $spliced == 0 ]]; then
            pass "$tag: bytes_spliced_backend_to_client $spliced"
        else
            fail "$tag: bytes_spliced_backend_to_client '$spliced' with --splice $splice"
        fi
        if grep -q "\"GET http://127.0.0.1:$NGINX_PORT/f1k.bin" "$PROXY_LOG"; then
            pass "$tag: access log written"
        else
            fail "$tag: no access-log line in the proxy's stderr"
        fi
        if grep -qiF -e "$USER_PASS" -e "$CREDS_B64" -e "Proxy-Authorization" "$PROXY_LOG"; then
            fail "$tag: the credentials appear in the proxy's log"
        else
            pass "$tag: no credentials in the proxy's log"
        fi
    fi
}

for auth in open auth; do
    for splice in on off; do run_suite "$auth" "$splice"; done
done

# --- the open-proxy refusal ------------------------------------------------------------
status=0
"$PROXY_BIN" -m forward -l 0.0.0.0 -p 0 >"$TMP/logs/open.out" 2>&1 &
OPEN_PID=$!
for _ in $(seq 100); do kill -0 "$OPEN_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$OPEN_PID" 2>/dev/null; then
    kill_pid "$OPEN_PID"
    fail "forward on 0.0.0.0 without credentials started (an open proxy)"
else
    wait "$OPEN_PID" || status=$?
    if ((status != 0)) && grep -q -- '--auth' "$TMP/logs/open.out" && grep -q -- '--open' "$TMP/logs/open.out"; then
        pass "forward on 0.0.0.0 without credentials refused (exit $status, names --auth and --open)"
    else
        fail "forward on 0.0.0.0 without credentials: exit $status, said: $(cat "$TMP/logs/open.out")"
    fi
fi
if e2e_start_proxy "forward --open" "$TMP/logs/proxy-open.log" -m forward -l 0.0.0.0 -p 0 -w 1 --open; then
    pass "forward on 0.0.0.0 with --open starts ($PROXY_ADDR)"
    fetch "forward --open: curl -x GET /f1k.bin" f1k.bin -x "http://127.0.0.1:${PROXY_ADDR##*:}" \
        "http://127.0.0.1:$NGINX_PORT/f1k.bin"
    e2e_stop_proxy "forward --open"
fi

e2e_summary
