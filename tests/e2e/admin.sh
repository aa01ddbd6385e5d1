#!/usr/bin/env bash
# End-to-end, admin listener: curl -> proxy -m http -> nginx on 127.0.0.1,
# with --admin 127.0.0.1:0 and a token. Sends a known load with curl (one
# request per connection, then several on one keep-alive connection), then
# fetches /metrics and parses it with the Python prometheus_client parser (a
# real Prometheus text parser): every family is typed, every counter ends in
# _total, and the counters equal the traffic curl measured (requests, 2xx,
# connections, bytes to the client to the byte, bytes to the backend as
# nginx logged them). Also: 401 without or with a wrong token, /stats parses
# as JSON with the same request count, /health says ok, and SIGTERM still
# exits 0 with the final report's per-listener lines.
#
# Installs curl and nginx if missing (apt-get update only then) and the
# prometheus_client Python package (pip, quietly; or Debian's package), runs
# everything from a temp dir on free ports, and stops what it started by PID.
#
# Usage: tests/e2e/admin.sh [PATH_TO_PROXY]   (default ./proxy)
# Last line: "N passed, N failed"; exit status non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

e2e_init e2e-admin "${1:-./proxy}"

# --- packages, workspace and cleanup ---------------------------------------------
e2e_install curl nginx
NGINX=$(find_nginx)
if ! e2e_install_python prometheus_client prometheus_client python3-prometheus-client; then
    echo "e2e-admin: the prometheus_client Python package could not be installed" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
e2e_workspace ferry-e2e-admin

# --- content and nginx ------------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/logs"
chmod 755 "$TMP" "$TMP/www"
chmod 1777 "$TMP/logs"
e2e_content

start_nginx() {
    # What nginx received of each request, in bytes (line, head and body),
    # and whether it came through ferry (which adds X-Forwarded-For).
    e2e_nginx "$1" "    log_format size '\$request_length \$http_x_forwarded_for';
    access_log $TMP/logs/access.log size;" ""
}

e2e_nginx_or_exit e2e-admin start_nginx

# --- the proxy ------------------------------------------------------------------------
TOKEN="e2e-$RANDOM-$RANDOM"
TAG=admin
e2e_start_proxy "$TAG" "$TMP/logs/proxy.log" -m http -l 127.0.0.1 -p 0 \
    -b "127.0.0.1:$NGINX_PORT" -w 2 --admin 127.0.0.1:0 --admin-token "$TOKEN" || {
    e2e_summary
    exit 1
}
ADMIN=""
for _ in $(seq 50); do
    ADMIN=$(sed -n 's/^ferry: admin on \(.*\)$/\1/p' "$PROXY_LOG" | head -n 1)
    [[ -n $ADMIN ]] && break
    sleep 0.1
done
if [[ -n $ADMIN ]]; then pass "$TAG: banner names the admin address ($ADMIN)"; else fail "$TAG: no 'ferry: admin on' banner"; fi
echo "e2e-admin: proxy $PROXY_PID on $PROXY_ADDR, admin on $ADMIN"

# --- the token ------------------------------------------------------------------------
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
code=$(status "http://$ADMIN/metrics")
if [[ $code == 401 ]]; then pass "$TAG: /metrics without a token: 401"; else fail "$TAG: /metrics without a token: $code"; fi
code=$(status -H "Authorization: Bearer wrong-$TOKEN" "http://$ADMIN/metrics")
if [[ $code == 401 ]]; then pass "$TAG: /metrics with a wrong token: 401"; else fail "$TAG: /metrics with a wrong token: $code"; fi
AUTH=(-H "Authorization: Bearer $TOKEN")
code=$(status "${AUTH[@]}" "http://$ADMIN/nowhere")
if [[ $code == 404 ]]; then pass "$TAG: unknown path: 404"; else fail "$TAG: unknown path: $code"; fi
code=$(status "${AUTH[@]}" -X POST "http://$ADMIN/metrics")
if [[ $code == 405 ]]; then pass "$TAG: POST /metrics: 405"; else fail "$TAG: POST /metrics: $code"; fi
body=$(curl -s --max-time 10 "${AUTH[@]}" "http://$ADMIN/health" || true)
if [[ $body == ok ]]; then pass "$TAG: /health says ok"; else fail "$TAG: /health said '$body'"; fi

# --- the load ----------------------------------------------------------------------
# curl's own count of what it received: header and body bytes of each response.
: >"$TMP/received"
SINGLE=10
for i in $(seq "$SINGLE"); do
    curl -sS --fail --max-time 30 -o /dev/null -w '%{size_header} %{size_download}\n' \
        "http://$PROXY_ADDR/f1k.bin?n=$i" >>"$TMP/received" || fail "$TAG: GET $i failed"
done
args=()
for f in "${FILES[@]}" f1k.bin f1k.bin; do args+=(-o /dev/null "http://$PROXY_ADDR/$f"); done
curl -sS --fail --max-time 60 -w '%{size_header} %{size_download}\n' "${args[@]}" >>"$TMP/received" ||
    fail "$TAG: keep-alive GETs failed"
KEEPALIVE=$((${#FILES[@]} + 2))
REQUESTS=$((SINGLE + KEEPALIVE))
CONNECTIONS=$((SINGLE + 1))
TO_CLIENT=$(awk '{ s += $1 + $2 } END { print s }' "$TMP/received")

# --- the metrics, through a real Prometheus parser ------------------------------------
# Fetch until the last client is gone (workers publish once per loop pass)
# and nginx has logged every request.
for _ in $(seq 100); do
    curl -s --max-time 10 "${AUTH[@]}" -o "$TMP/metrics.txt" "http://$ADMIN/metrics" || true
    if grep -q '^ferry_connections_active{listener="main"} 0$' "$TMP/metrics.txt" &&
        [[ $(awk '$2 != "-"' "$TMP/logs/access.log" | wc -l) -ge $REQUESTS ]]; then
        break
    fi
    sleep 0.1
done
# Only what came through ferry (not e2e_start_nginx's readiness probes).
TO_BACKEND=$(awk '$2 != "-" { s += $1 } END { print s + 0 }' "$TMP/logs/access.log")

python3 - "$TMP/metrics.txt" "$REQUESTS" "$CONNECTIONS" "$TO_CLIENT" "$TO_BACKEND" "$NGINX_PORT" <<'EOF' >"$TMP/check.out" 2>&1 || true
import sys
from prometheus_client.parser import text_string_to_metric_families

path, requests, connections, to_client, to_backend, nginx_port = sys.argv[1:]
text = open(path).read()
samples, families, names = {}, {}, {}
try:
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        names[family.name] = [s.name for s in family.samples]
        for s in family.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
            samples[key] = s.value
    print("ok\tparsed by prometheus_client: %d families, %d samples" % (len(families), len(samples)))
except Exception as e:  # the parser's word is the test
    print("FAIL\tprometheus_client cannot parse /metrics: %r" % e)
    sys.exit(0)

def check(what, cond):
    print(("ok" if cond else "FAIL") + "\t" + what)

untyped = [n for n, t in families.items() if t in ("untyped", "unknown")]
check("every family has a TYPE (%s)" % (untyped or "none untyped"), not untyped)
check("every family is ferry_", all(n.startswith("ferry_") for n in families))
check("counter samples end in _total", all(
    n.endswith("_total") for f, t in families.items() if t == "counter" for n in names[f]))
def value(name, **labels):
    key = name + "".join(f",{k}={v}" for k, v in sorted(labels.items()))
    return samples.get(key)
main = {"listener": "main"}
for name, want in [
    ("ferry_http_requests_total", int(requests)),
    ("ferry_connections_accepted_total", int(connections)),
    ("ferry_bytes_backend_to_client_total", int(to_client)),
    ("ferry_bytes_client_to_backend_total", int(to_backend)),
    ("ferry_http_exchanges_timed_total", int(requests)),
    ("ferry_connections_active", 0),
]:
    got = value(name, **main)
    check("%s{listener=main} == %s (got %s)" % (name, want, got), got == want)
got = value("ferry_http_responses_total", listener="main", **{"class": "2xx"})
check("ferry_http_responses_total{class=2xx} == %s (got %s)" % (requests, got), got == int(requests))
got = value("ferry_http_responses_total", listener="main", **{"class": "5xx"})
check("ferry_http_responses_total{class=5xx} == 0 (got %s)" % got, got == 0)
hits = value("ferry_backend_pool_hits_total", **main)
misses = value("ferry_backend_pool_misses_total", **main)
check("pool hits + misses == requests (%s + %s)" % (hits, misses), hits + misses == int(requests))
up = value("ferry_upstream_up", listener="main", backend="127.0.0.1:" + nginx_port)
check("ferry_upstream_up for nginx == 1 (got %s)" % up, up == 1)
ratio = value("ferry_acceleration_ratio", **main)
check("ferry_acceleration_ratio >= 1 (got %s)" % ratio, ratio is not None and ratio >= 1)
check("ferry_loop_iterations_total > 0", (value("ferry_loop_iterations_total") or 0) > 0)
check("ferry_reloads_total{outcome=ok} == 0", value("ferry_reloads_total", outcome="ok") == 0)
EOF
while IFS=$'\t' read -r verdict what; do
    case $verdict in
        ok) pass "$TAG: $what" ;;
        FAIL) fail "$TAG: $what" ;;
        *) fail "$TAG: $verdict $what" ;;
    esac
done <"$TMP/check.out"

# --- /stats --------------------------------------------------------------------------
curl -s --max-time 10 "${AUTH[@]}" -o "$TMP/stats.json" "http://$ADMIN/stats" || true
got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["listeners"]["main"]["http_requests"], s["totals"]["http_requests"])' "$TMP/stats.json" 2>&1 || true)
if [[ $got == "$REQUESTS $REQUESTS" ]]; then pass "$TAG: /stats is JSON with $REQUESTS requests"; else fail "$TAG: /stats: $got"; fi

# --- stop ----------------------------------------------------------------------------
e2e_stop_proxy "$TAG"
if grep -q "^listener main http_requests $REQUESTS\$" "$PROXY_LOG"; then
    pass "$TAG: final report has the per-listener line"
else
    fail "$TAG: final report lacks 'listener main http_requests $REQUESTS'"
fi
stop_pid "$NGINX_PID"
NGINX_PID=""
e2e_summary
