#!/usr/bin/env bash
# bench/run.sh MODE: the benchmark runner behind `make bench*`.
#
#   bench  throughput/latency with keep-alive, per payload, ferry vs peers,
#          TCP mode and HTTP mode (with backend connection reuse)
#   all    ferry's configuration matrix (workers x splice x buffer size)
#   mem    RSS per idle connection (9,000 through each proxy) and peak RSS
#   conn   new connections per second (Connection: close on every request)
#   forward  forward proxies (ferry -m forward, tinyproxy, squid) driven by
#          ferry-load: CONNECT tunnels (one per request, and long-lived ones
#          carrying keep-alive GETs) and absolute-form GETs
#
# Environment (all optional): CONNS DURATION ROUNDS PAYLOADS TARGETS BACKEND
# (nginx|apache) PROXY (path of the ferry binary) FERRY_ARGS LOAD_CPU PROXY_CPU
# IDLE_CONNS SIEGE_REPS HTTP_PAYLOADS FERRY_HTTP_ARGS DISTURBED_PCT RETRIES
# QUIET_WAIT FERRY_LOAD FERRY_FWD_ARGS FWD_CONNECT_PAYLOADS FWD_TUNNEL_PAYLOADS
# FWD_GET_PAYLOADS.  See docs/BENCHMARKS.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE=${1:-bench}
PAYLOADS=${PAYLOADS:-1k.bin 16k.bin 128k.bin 1m.bin}
# The HTTP-mode targets fetch only these (of PAYLOADS), to keep `make bench` short.
HTTP_PAYLOADS=${HTTP_PAYLOADS:-1k.bin 16k.bin 1m.bin}
FERRY_ARGS=${FERRY_ARGS:-}
FERRY_HTTP_ARGS=${FERRY_HTTP_ARGS:-}
DISTURBED_PCT=${DISTURBED_PCT:-5}   # see run_rounds
RETRIES=${RETRIES:-2}
QUIET_WAIT=${QUIET_WAIT:-120}
export DISTURBED_PCT RETRIES QUIET_WAIT

is_http() { case "$1" in *-http|*-http-*) return 0 ;; esac; return 1; }

# Does target $1 fetch payload $2?  TCP targets and direct fetch every payload;
# HTTP targets only those also in HTTP_PAYLOADS (index.html always).
fetches() {
  is_http "$1" || return 0
  case " index.html $HTTP_PAYLOADS " in *" $2 "*) return 0 ;; esac
  return 1
}

needs_ferry() { case " $1 " in *" ferry"*|*" w1-"*|*" w$NCPU-"*) return 0 ;; esac; return 1; }

# Start the proxies named in $1 in front of the backend.
start_targets() {
  local t bport=${SRV_PORT[$BACKEND_NAME]}
  for t in $1; do
    case "$t" in
      direct) SRV_PORT[direct]=$bport ;;
      ferry-off)  start_ferry "$t" "$PROXY_CPU" "$bport" -w 1 --splice off $FERRY_ARGS ;;
      ferry-auto) start_ferry "$t" "$PROXY_CPU" "$bport" -w 1 --splice auto $FERRY_ARGS ;;
      ferry-on)   start_ferry "$t" "$PROXY_CPU" "$bport" -w 1 --splice on $FERRY_ARGS ;;
      # --busy-poll: the worker polls on for 50 µs after its last event
      # instead of sleeping (see docs/BENCHMARKS.md on wakeups).
      ferry-busy) start_ferry "$t" "$PROXY_CPU" "$bport" -w 1 --splice auto --busy-poll 50 $FERRY_ARGS ;;
      haproxy) start_haproxy "$t" "$bport" ;;
      nginx)   start_nginx_stream "$t" "$bport" ;;
      # HTTP mode (-m http): ferry with its defaults (pool 32 idle connections,
      # 100 requests per backend connection), and with connections kept for
      # 10,000 requests; HAProxy mode http; nginx proxy_pass + upstream keepalive.
      ferry-http-off)  start_ferry "$t" "$PROXY_CPU" "$bport" -m http -w 1 --splice off $FERRY_HTTP_ARGS ;;
      ferry-http-auto) start_ferry "$t" "$PROXY_CPU" "$bport" -m http -w 1 --splice auto $FERRY_HTTP_ARGS ;;
      ferry-http-on)   start_ferry "$t" "$PROXY_CPU" "$bport" -m http -w 1 --splice on $FERRY_HTTP_ARGS ;;
      ferry-http-10k)  start_ferry "$t" "$PROXY_CPU" "$bport" -m http -w 1 --splice auto \
                         --pool-max-requests 10000 $FERRY_HTTP_ARGS ;;
      ferry-http-busy) start_ferry "$t" "$PROXY_CPU" "$bport" -m http -w 1 --splice auto \
                         --pool-max-requests 10000 --busy-poll 50 $FERRY_HTTP_ARGS ;;
      # Forward proxies (bench-forward), each one process on $PROXY_CPU;
      # CONNECT is allowed to the backend's port only.
      ferry-fwd) start_ferry "$t" "$PROXY_CPU" "$bport" -m forward -w 1 --connect-ports "$bport" \
                   ${FERRY_FWD_ARGS:-} ;;
      tinyproxy) start_tinyproxy "$t" "$bport" ;;
      squid)     start_squid "$t" "$bport" ;;
      haproxy-http) start_haproxy "$t" "$bport" 4096 http ;;
      nginx-http)   start_nginx_http "$t" "$bport" ;;
      w*-*-*k) # matrix config: w<workers>-<splice>-<buffer KiB>k
        local w s b cpus
        IFS=- read -r w s b <<<"$t"; w=${w#w}; b=${b%k}
        if [ "$w" = 1 ]; then cpus=$PROXY_CPU; else cpus=$ALL_CPUS; fi
        start_ferry "$t" "$cpus" "$bport" -w "$w" --splice "$s" --buffer-size $((b * 1024)) $FERRY_ARGS ;;
      *) die "unknown target '$t'" ;;
    esac
    [ "$t" = direct ] || say "started $t on 127.0.0.1:${SRV_PORT[$t]} (pid ${SRV_PID[$t]})"
  done
}

# Check every target x payload before timing; a failing target is excluded
# from the rounds and reported FAILED.  Forward proxies are checked with
# precheck_forward (an absolute-form GET and a GET through a CONNECT tunnel).
ACTIVE=""
precheck_targets() { # targets payloads [check function]
  local t p ok check=${3:-precheck}
  : >"$RUN_DIR/excluded.tsv"
  for t in $1; do
    ok=1
    for p in index.html $2; do
      fetches "$t" "$p" || continue
      if ! "$check" "$t" "$p"; then
        say "precheck FAILED: $PRECHECK_MSG"
        printf '%s\tprecheck: %s\n' "$t" "$PRECHECK_MSG" >>"$RUN_DIR/excluded.tsv"
        ok=0; break
      fi
    done
    [ $ok = 1 ] && ACTIVE="$ACTIVE $t"
  done
  [ -n "$ACTIVE" ] || die "no target passed the precheck"
  say "precheck ok (200 + exact bytes) for:$ACTIVE"
}

proxy_of() { [ "$1" = direct ] && echo - || echo "$1"; }

# Rounds: in each round every payload, and for it every target, in an order
# rotated by one per round, so that drift hits all targets alike.
run_rounds() { # mode payloads conns duration rounds [wrk args]
  local mode=$1 payloads=$2 conns=$3 dur=$4 rounds=$5 r p t i n
  shift 5
  local arr order
  for ((r = 1; r <= rounds; r++)); do
    for p in $payloads; do
      arr=()
      for t in $ACTIVE; do fetches "$t" "$p" && arr+=("$t"); done
      n=${#arr[@]}
      [ "$n" -gt 0 ] || continue
      order=()
      for ((i = 0; i < n; i++)); do order+=("${arr[$(((i + r - 1) % n))]}"); done
      for t in "${order[@]}"; do
        # A run during which other processes took more than DISTURBED_PCT % of
        # a pinned CPU (user time) is set aside in disturbed.jsonl and repeated,
        # at most RETRIES times; the last attempt is kept whatever happened.
        local try
        for ((try = 0; ; try++)); do
          [ "$RETRIES" -gt 0 ] && wait_quiet
          WRK_OUT="$RUN_DIR/wrk.tmp"; : >"$WRK_OUT"
          run_wrk "$mode" "$t" "$p" "$r" "$(proxy_of "$t")" "$conns" "$dur" "$@"
          WRK_OUT=""
          if [ "$try" -lt "$RETRIES" ] && awk -v a="$FOREIGN_LOAD" -v b="$FOREIGN_PROXY" -v m="$DISTURBED_PCT" \
               'BEGIN { exit !(a > m || b > m) }'; then
            cat "$RUN_DIR/wrk.tmp" >>"$RUN_DIR/disturbed.jsonl"
            say "round $r $p $t: other processes used ${FOREIGN_LOAD}% of CPU $LOAD_CPU, ${FOREIGN_PROXY}% of CPU $PROXY_CPU: repeating"
            continue
          fi
          cat "$RUN_DIR/wrk.tmp" >>"$RUN_DIR/runs.jsonl"; rm -f "$RUN_DIR/wrk.tmp"
          break
        done
        printf 'bench: round %d/%d %-9s %-15s %s\n' "$r" "$rounds" "$p" "$t" \
          "$(python3 -c 'import json,sys; w=json.loads(sys.argv[1]); d=w["duration_us"]/1e6; e=w["err_connect"]+w["err_read"]+w["err_write"]+w["err_timeout"]; print("%.0f req/s  p99 %.2f ms  errors %d  non-2xx %d" % (w["requests"]/d, w["p99_us"]/1000, e, w["err_status"]))' "$LAST_WRK")  other load ${FOREIGN_LOAD}%/${FOREIGN_PROXY}%" >&2
      done
    done
  done
}

# Peak RSS, RSS, exit status and (ferry) report of a server, then stop it.
record_and_stop() { # name
  local name=$1 rep="" hwm rss
  [ -n "${SRV_PID[$name]:-}" ] || return 0
  hwm=$(vm_kib "$name" VmHWM); rss=$(vm_kib "$name" VmRSS)
  stop_server "$name"
  if [ "${SRV_KIND[$name]}" = ferry ]; then
    rep=$(ferry_report "${SRV_LOG[$name]}" | paste -sd, -)
    [ "$STOP_RC" = 0 ] || say "WARNING: $name exited with status $STOP_RC on SIGTERM (see ${SRV_LOG[$name]})"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${SRV_KIND[$name]}" "${hwm:-0}" "${rss:-0}" "$STOP_RC" "$rep" \
    >>"$RUN_DIR/servers.tsv"
}

collect_servers() {
  local name
  for name in "${SRV_ORDER[@]}"; do record_and_stop "$name"; done
}

# siege, briefly, as a second client.  -r (repetitions), not -t: siege 4.0.7
# can deadlock when its timer cancels the client threads (seen here: a futex
# wait that never ends), and `timeout` guards against any other hang.
run_siege() { # payload reps-per-client
  local t out rc
  for t in $ACTIVE; do
    fetches "$t" "$1" || continue
    rc=0
    out=$(timeout -k 2 60 taskset -c "$LOAD_CPU" siege -R "$BENCH/siege.conf" -b -c 10 -r "$2" \
          "http://127.0.0.1:${SRV_PORT[$t]}/$1" 2>/dev/null) || rc=$?
    out=$(tr -d '\n' <<<"$out" | sed 's/^[^{]*//')
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then out='{"error":"siege did not finish within 60 s"}'
    elif [ -z "$out" ]; then out="{\"error\":\"siege exited with status $rc and no summary\"}"
    fi
    printf '{"mode":"siege","target":"%s","payload":"%s","reps":%s,"siege":%s}\n' "$t" "$1" "$2" "$out" >>"$RUN_DIR/runs.jsonl"
    say "siege $t /$1: $(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s.get("error") or "%s trans/s, %s failed, %s OK" % (s.get("transaction_rate"), s.get("failed_transactions"), s.get("successful_transactions")))' "$out")"
  done
}

finish() { # mode
  local rc=0
  python3 "$BENCH/report.py" "$1" "$RUN_DIR" || rc=$?
  say "raw results and logs: ${RUN_DIR#$ROOT/}  (table: ${RUN_DIR#$ROOT/}/table.md)"
  exit $rc
}

common_start() { # mode targets
  require_tools wrk curl taskset python3 nginx haproxy siege
  [ "$BACKEND" = apache ] && require_tools apache2
  require_payloads
  needs_ferry "$2" && require_proxy
  raise_nofile
  new_run_dir "$1"
  : >"$RUN_DIR/servers.tsv"
  write_meta "$1"
  say "run dir ${RUN_DIR#$ROOT/}; load (wrk, backend) on CPU $LOAD_CPU, proxies on CPU $PROXY_CPU"
  start_backend backend
  say "backend $BACKEND on 127.0.0.1:${SRV_PORT[backend]} (pid ${SRV_PID[backend]})"
  start_targets "$2"
}

case "$MODE" in
  bench)
    TARGETS=${TARGETS:-direct ferry-off ferry-auto ferry-busy haproxy nginx ferry-http-off ferry-http-auto ferry-http-10k ferry-http-busy haproxy-http nginx-http}
    CONNS=${CONNS:-50}; DURATION=${DURATION:-4}; ROUNDS=${ROUNDS:-3}
    export CONNS DURATION ROUNDS PAYLOADS HTTP_PAYLOADS FERRY_HTTP_ARGS
    BACKEND_CONN_LOG=1   # count the backend connections that carry requests (reuse)
    common_start bench "$TARGETS"
    precheck_targets "$TARGETS" "$PAYLOADS"
    for t in $ACTIVE; do # warm-up, not recorded
      p=16k.bin; fetches "$t" $p || p=$(awk '{print $1}' <<<"$HTTP_PAYLOADS")
      taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${SRV_PORT[$t]}/$p" >/dev/null 2>&1 || true
    done
    run_rounds bench "$PAYLOADS" "$CONNS" "$DURATION" "$ROUNDS" --latency
    run_siege 16k.bin "${SIEGE_REPS:-2000}"
    collect_servers
    finish bench ;;
  conn)
    TARGETS=${TARGETS:-direct ferry-off haproxy nginx}
    CONNS=${CONNS:-50}; DURATION=${DURATION:-5}; ROUNDS=${ROUNDS:-3}
    PAYLOADS=${CONN_PAYLOADS:-1k.bin}
    export CONNS DURATION ROUNDS PAYLOADS
    common_start conn "$TARGETS"
    precheck_targets "$TARGETS" "$PAYLOADS"
    run_rounds conn "$PAYLOADS" "$CONNS" "$DURATION" "$ROUNDS" -H "Connection: close"
    collect_servers
    finish conn ;;
  all)
    CONNS=${CONNS:-50}; DURATION=${DURATION:-3}; ROUNDS=${ROUNDS:-2}
    export CONNS DURATION ROUNDS PAYLOADS
    if [ -z "${TARGETS:-}" ]; then
      TARGETS=""
      for w in $(printf '%s\n' 1 "$NCPU" | sort -un); do
        for s in off auto on; do for b in 16 64; do TARGETS="$TARGETS w$w-$s-${b}k"; done; done
      done
      TARGETS="$TARGETS haproxy"
    fi
    common_start all "$TARGETS"
    precheck_targets "$TARGETS" "$PAYLOADS"
    run_rounds all "$PAYLOADS" "$CONNS" "$DURATION" "$ROUNDS"
    collect_servers
    finish all ;;
  mem)
    TARGETS=${TARGETS:-ferry-off ferry-auto haproxy nginx}
    IDLE_CONNS=${IDLE_CONNS:-9000}; CONNS=${CONNS:-50}; DURATION=${DURATION:-5}
    export IDLE_CONNS CONNS DURATION
    require_tools wrk curl taskset python3 nginx haproxy
    require_payloads
    needs_ferry "$TARGETS" && require_proxy
    raise_nofile
    [ "$(ulimit -n)" -ge $((2 * IDLE_CONNS + 100)) ] || die "fd limit $(ulimit -n) too low for $IDLE_CONNS proxied connections (need $((2 * IDLE_CONNS + 100)))"
    new_run_dir mem
    : >"$RUN_DIR/servers.tsv"
    write_meta mem
    start_backend backend
    say "backend $BACKEND on 127.0.0.1:${SRV_PORT[backend]} (pid ${SRV_PID[backend]})"
    : >"$RUN_DIR/mem.tsv"; : >"$RUN_DIR/excluded.tsv"
    bport=${SRV_PORT[backend]}
    for t in $TARGETS; do
      case "$t" in
        ferry-*) start_ferry "$t" "$PROXY_CPU" "$bport" -w 1 --splice "${t#ferry-}" \
                   --max-conns $((IDLE_CONNS + 1000)) --idle-timeout 600 $FERRY_ARGS ;;
        haproxy) start_haproxy "$t" "$bport" $((IDLE_CONNS + 500)) ;;
        nginx) start_nginx_stream "$t" "$bport" ;;
        *) die "unknown target '$t' for mem" ;;
      esac
      if ! precheck "$t" 1m.bin; then
        say "precheck FAILED: $PRECHECK_MSG"
        printf '%s\tprecheck: %s\n' "$t" "$PRECHECK_MSG" >>"$RUN_DIR/excluded.tsv"
        stop_server "$t"; continue
      fi
      rss0=$(vm_kib "$t" VmRSS)
      run_wrk mem "$t" 1m.bin 1 "$t" "$CONNS" "$DURATION"
      hwm_load=$(vm_kib "$t" VmHWM); rss1=$(vm_kib "$t" VmRSS)
      # The idle client: its own process, on the load CPU, fds of its own.
      ready="$RUN_DIR/idle.$t.out"
      taskset -c "$LOAD_CPU" python3 "$BENCH/idle_conns.py" --port "${SRV_PORT[$t]}" \
        --count "$IDLE_CONNS" --path /index.html --spread >"$ready" 2>"$RUN_DIR/idle.$t.err" &
      cpid=$!; EXTRA_PIDS+=("$cpid")
      for ((i = 0; i < 1200; i++)); do
        grep -q '^READY' "$ready" 2>/dev/null && break
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.1
      done
      if ! grep -q '^READY' "$ready"; then
        cat "$RUN_DIR/idle.$t.err" >&2
        die "idle client for $t did not get ready"
      fi
      sleep 1   # let the proxy settle
      rss2=$(vm_kib "$t" VmRSS)
      opened=$(awk '/^READY/{print $2}' "$ready")
      kill -TERM "$cpid"; wait "$cpid" || true
      sleep 1
      rss3=$(vm_kib "$t" VmRSS); hwm=$(vm_kib "$t" VmHWM)
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rss0" "$hwm_load" "$rss1" "$rss2" "$rss3" "$hwm" "$opened" >>"$RUN_DIR/mem.tsv"
      say "$t: RSS start ${rss0} KiB, peak under 1 MiB load ${hwm_load} KiB, before idle ${rss1} KiB, with $opened idle ${rss2} KiB, after close ${rss3} KiB"
      record_and_stop "$t"
    done
    collect_servers
    finish mem ;;
  forward)
    # ferry-load, not wrk, drives these: wrk speaks neither CONNECT nor
    # absolute-form requests.  Three measures, each over its payloads, in
    # interleaved rounds like `bench`:
    #   connect: one CONNECT tunnel per request (connect, CONNECT, 200, GET, response, close)
    #   tunnel:  CONNS long-lived tunnels, each carrying keep-alive GETs
    #   get:     absolute-form GETs, keep-alive with the proxy
    TARGETS=${TARGETS:-ferry-fwd tinyproxy squid}
    CONNS=${CONNS:-50}; DURATION=${DURATION:-3}; ROUNDS=${ROUNDS:-3}
    FWD_CONNECT_PAYLOADS=${FWD_CONNECT_PAYLOADS:-index.html 1k.bin 16k.bin 128k.bin 1m.bin}
    FWD_TUNNEL_PAYLOADS=${FWD_TUNNEL_PAYLOADS:-1k.bin 1m.bin}
    FWD_GET_PAYLOADS=${FWD_GET_PAYLOADS:-1k.bin 1m.bin}
    PAYLOADS="$FWD_CONNECT_PAYLOADS $FWD_TUNNEL_PAYLOADS $FWD_GET_PAYLOADS"
    export CONNS DURATION ROUNDS FERRY_FWD_ARGS FWD_CONNECT_PAYLOADS FWD_TUNNEL_PAYLOADS FWD_GET_PAYLOADS
    require_tools curl taskset python3 nginx tinyproxy
    command -v squid >/dev/null 2>&1 || [ -x /usr/sbin/squid ] || die "missing tool(s): squid (run bench/setup.sh as root)"
    [ "$BACKEND" = apache ] && require_tools apache2
    require_payloads
    needs_ferry "$TARGETS" && require_proxy
    require_load
    raise_nofile
    new_run_dir forward
    : >"$RUN_DIR/servers.tsv"
    write_meta forward
    say "run dir ${RUN_DIR#$ROOT/}; load (ferry-load, backend) on CPU $LOAD_CPU, proxies on CPU $PROXY_CPU"
    start_backend backend
    say "backend $BACKEND on 127.0.0.1:${SRV_PORT[backend]} (pid ${SRV_PID[backend]})"
    start_targets "$TARGETS"
    precheck_targets "$TARGETS" "$(tr ' ' '\n' <<<"$PAYLOADS" | sort -u | tr '\n' ' ')" precheck_forward
    for t in $ACTIVE; do # warm-up, not recorded
      taskset -c "$LOAD_CPU" "$LOAD_BIN" -m connect -x "127.0.0.1:${SRV_PORT[$t]}" \
        -T "127.0.0.1:${SRV_PORT[backend]}" --path /1k.bin -c "$CONNS" -d 1 >/dev/null 2>&1 || true
    done
    run_rounds forward-connect "$FWD_CONNECT_PAYLOADS" "$CONNS" "$DURATION" "$ROUNDS"
    run_rounds forward-tunnel "$FWD_TUNNEL_PAYLOADS" "$CONNS" "$DURATION" "$ROUNDS"
    run_rounds forward-get "$FWD_GET_PAYLOADS" "$CONNS" "$DURATION" "$ROUNDS"
    collect_servers
    finish forward ;;
  *) die "usage: bench/run.sh bench|all|mem|conn|forward" ;;
esac
