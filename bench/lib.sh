# bench/lib.sh: shared helpers for bench/run.sh (sourced, not executed).
#
# Invariants:
# - Every server is started by this shell, from a config rendered under
#   $RUN_DIR, bound to 127.0.0.1 on a port the kernel handed out, and is
#   registered in SRV_* arrays.  Servers are stopped by PID (their own and
#   their children's), never by name.  The EXIT trap stops whatever is still
#   registered, so an error or ^C leaves no orphan.
# - Pinning: the proxy under test runs on $PROXY_CPU; wrk, the idle client and
#   the backend run on $LOAD_CPU.  The same for every target.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
OUT="$BENCH/out"
WWW="$OUT/www"
PROXY_BIN=${PROXY:-$ROOT/proxy}
case "$PROXY_BIN" in /*) ;; *) PROXY_BIN="$ROOT/$PROXY_BIN" ;; esac
# The forward-proxy load generator (src/bin/ferry-load.rs), for `bench-forward`.
LOAD_BIN=${FERRY_LOAD:-$ROOT/ferry-load}
case "$LOAD_BIN" in /*) ;; *) LOAD_BIN="$ROOT/$LOAD_BIN" ;; esac
[ -x "$LOAD_BIN" ] || [ -n "${FERRY_LOAD:-}" ] || LOAD_BIN="$ROOT/target/release/ferry-load"

NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
  LOAD_CPU=${LOAD_CPU:-0}
  PROXY_CPU=${PROXY_CPU:-1}
else
  LOAD_CPU=${LOAD_CPU:-0}
  PROXY_CPU=${PROXY_CPU:-0}
fi
ALL_CPUS="0-$((NCPU - 1))"
CLK_TCK=$(getconf CLK_TCK)
BACKEND=${BACKEND:-nginx}
NGINX_MODULES=${NGINX_MODULES:-/usr/lib/nginx/modules}

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- registry
declare -A SRV_PID=() SRV_PORT=() SRV_LOG=() SRV_KIND=()
SRV_ORDER=()
EXTRA_PIDS=()        # clients etc. started in the background

children_of() { # pid -> direct children pids
  ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}

server_pids() { # name -> master pid then children (nginx/apache workers)
  local pid=${SRV_PID[$1]}
  echo "$pid"
  children_of "$pid"
}

# The process that carries the traffic (for RSS): the single child of an
# nginx master / Apache parent, or the process itself.
traffic_pid() {
  local kind=${SRV_KIND[$1]} kids
  case "$kind" in
    nginx|apache)
      kids=$(children_of "${SRV_PID[$1]}")
      # Apache may have more than one child briefly; take the largest RSS.
      local best="" bestrss=-1 k r
      for k in $kids; do
        r=$(awk '/^VmRSS:/{print $2}' "/proc/$k/status" 2>/dev/null || echo 0)
        [ -n "$r" ] || r=0
        if [ "$r" -gt "$bestrss" ]; then best=$k; bestrss=$r; fi
      done
      echo "${best:-${SRV_PID[$1]}}" ;;
    *) echo "${SRV_PID[$1]}" ;;
  esac
}

cpu_ticks() { # name -> utime+stime (ticks) summed over the server's processes
  local total=0 p t
  for p in $(server_pids "$1"); do
    t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

cpu_uticks() { # name -> utime (ticks) summed over the server's processes
  local total=0 p t
  for p in $(server_pids "$1"); do
    t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12}')
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

cpu_user_ticks() { # cpu -> user + nice ticks of that CPU so far (/proc/stat), whoever ran
  awk -v c="cpu$1" '$1 == c {print $2 + $3}' /proc/stat
}

cpu_busy_ticks() { # cpu -> user + nice + system ticks of that CPU so far
  awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4}' /proc/stat
}

# Wait (at most QUIET_WAIT seconds) until, over half a second, neither pinned CPU
# is more than DISTURBED_PCT % busy.  Between wrk runs the benchmark's own
# servers are idle, so what is busy then is other work (a build, a test suite).
wait_quiet() {
  local waited=0 l0 p0 l1 p1 busy
  while :; do
    l0=$(cpu_busy_ticks "$LOAD_CPU"); p0=$(cpu_busy_ticks "$PROXY_CPU")
    sleep 0.5
    l1=$(cpu_busy_ticks "$LOAD_CPU"); p1=$(cpu_busy_ticks "$PROXY_CPU")
    busy=$(awk -v a=$((l1 - l0)) -v b=$((p1 - p0)) -v hz="$CLK_TCK" 'BEGIN { m = a > b ? a : b; printf "%.0f", m * 200 / hz }')
    if [ "$busy" -le "${DISTURBED_PCT:-5}" ] || [ "$waited" -ge "${QUIET_WAIT:-120}" ]; then
      [ "$waited" -gt 0 ] && say "waited ${waited} s for other work to leave the pinned CPUs (now ${busy}% busy)"
      QUIET_WAITED=$((${QUIET_WAITED:-0} + waited))
      return 0
    fi
    sleep 0.5; waited=$((waited + 1))
  done
}

vm_kib() { # name field(VmRSS|VmHWM) -> KiB of the traffic process
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$(traffic_pid "$1")/status" 2>/dev/null || echo 0
}

kill_tree() { # pid [timeout_s]: TERM the pid, wait, then KILL it and its children
  local pid=$1 t=${2:-5} kids i
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(children_of "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid did not stop on SIGTERM within ${t}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for i in $kids; do
    if kill -0 "$i" 2>/dev/null; then kill -KILL "$i" 2>/dev/null || true; fi
  done
}

stop_server() { # name -> sets STOP_RC to the exit status
  local name=$1 pid=${SRV_PID[$1]:-}
  STOP_RC=0
  [ -n "$pid" ] || return 0
  kill_tree "$pid" 10
  wait "$pid" 2>/dev/null || STOP_RC=$?
  unset "SRV_PID[$name]"
}

cleanup() {
  local rc=$? i name
  trap - EXIT INT TERM
  for ((i = ${#EXTRA_PIDS[@]} - 1; i >= 0; i--)); do kill_tree "${EXTRA_PIDS[$i]}" 2; done
  for ((i = ${#SRV_ORDER[@]} - 1; i >= 0; i--)); do
    name=${SRV_ORDER[$i]}
    [ -n "${SRV_PID[$name]:-}" ] && stop_server "$name"
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- checks
require_tools() {
  local t missing=()
  for t in "$@"; do
    case "$t" in
      apache2) [ -x /usr/sbin/apache2 ] || missing+=("$t") ;;   # called by path
      *) command -v "$t" >/dev/null 2>&1 || missing+=("$t") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] || die "missing tool(s): ${missing[*]} (run bench/setup.sh as root)"
}

require_payloads() {
  local f
  for f in index.html 1k.bin 16k.bin 128k.bin 1m.bin; do
    [ -s "$WWW/$f" ] || die "payload $WWW/$f missing (run bench/setup.sh)"
  done
}

require_proxy() {
  [ -x "$PROXY_BIN" ] || die "ferry binary $PROXY_BIN not found (build it with \`make\` at the repo root, or set PROXY=path)"
}

require_load() {
  [ -x "$LOAD_BIN" ] || die "load generator $LOAD_BIN not found (\`make ferry-load\` at the repo root, or set FERRY_LOAD=path)"
}

raise_nofile() { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_in_use() { # port -> 0 if something accepts connections there
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() { # name port: wait until it accepts, or the server died
  local name=$1 port=$2 i
  for ((i = 0; i < 200; i++)); do
    if ! kill -0 "${SRV_PID[$name]}" 2>/dev/null; then
      say "$name exited at start; last lines of ${SRV_LOG[$name]}:"
      tail -n 15 "${SRV_LOG[$name]}" >&2 || true
      die "$name failed to start (port $port in use? bad config?)"
    fi
    port_in_use "$port" && return 0
    sleep 0.05
  done
  tail -n 15 "${SRV_LOG[$name]}" >&2 || true
  die "$name did not accept on 127.0.0.1:$port within 10s"
}

pick_port() { # [fixed] -> a free port; a fixed port that is busy is an error
  local p=${1:-}
  if [ -n "$p" ]; then
    port_in_use "$p" && die "port $p on 127.0.0.1 is already in use"
    echo "$p"
  else
    free_port
  fi
}

# ---------------------------------------------------------------- configs
render() { # template out KEY=VALUE...
  local tpl=$1 out=$2; shift 2
  local args=() kv
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
  if grep -q '@[A-Z_]*@' "$out"; then die "unrendered placeholder in $out"; fi
}

new_run_dir() { # mode
  RUN_ID="$(date +%Y%m%d-%H%M%S)-$1"
  RUN_DIR="$OUT/runs/$RUN_ID"
  mkdir -p "$RUN_DIR"
  ln -sfn "runs/$RUN_ID" "$OUT/last-$1"
  # Snapshot the ferry binary: every ferry of the run uses the same one, even
  # if ./proxy is rebuilt while the run goes on.
  if [ -x "$PROXY_BIN" ]; then
    cp -p "$PROXY_BIN" "$RUN_DIR/proxy"
    PROXY_BIN="$RUN_DIR/proxy"
  fi
  if [ -x "$LOAD_BIN" ]; then
    cp -p "$LOAD_BIN" "$RUN_DIR/ferry-load"
    LOAD_BIN="$RUN_DIR/ferry-load"
  fi
}

register() { # name kind pid port log
  SRV_PID[$1]=$3; SRV_KIND[$1]=$2; SRV_PORT[$1]=$4; SRV_LOG[$1]=$5
  SRV_ORDER+=("$1")
}

# ---------------------------------------------------------------- servers
# All start functions: name [fixed-port]; they register the server and wait
# until it accepts connections.
NOFILE=$(ulimit -Hn)

start_backend() { # name
  local name=$1 port log conf
  port=$(pick_port "${BACKEND_PORT:-}")
  log="$RUN_DIR/$name.log"
  case "$BACKEND" in
    nginx)
      mkdir -p "$RUN_DIR/nginx-backend-tmp"
      conf="$RUN_DIR/$name.conf"
      # The connection log (see nginx-backend.conf): only where reuse is measured.
      local connlog="# no connection log"
      if [ "${BACKEND_CONN_LOG:-0}" = 1 ]; then
        CONN_LOG_FILE="$RUN_DIR/backend-conns.log"; : >"$CONN_LOG_FILE"
        connlog="access_log $CONN_LOG_FILE bench_conns if=\$bench_first_request;"
      fi
      render "$BENCH/conf/nginx-backend.conf" "$conf" PORT="$port" RUN="$RUN_DIR" WWW="$WWW" \
        NOFILE="$NOFILE" WORKER_CONNS=$((NOFILE - 100)) CONN_LOG="$connlog"
      taskset -c "$LOAD_CPU" nginx -p "$RUN_DIR" -e "$RUN_DIR/$name.error.log" -c "$conf" >"$log" 2>&1 &
      register "$name" nginx $! "$port" "$log" ;;
    apache)
      mkdir -p "$RUN_DIR/apache"
      chown www-data "$RUN_DIR/apache" 2>/dev/null || true
      conf="$RUN_DIR/$name.conf"
      render "$BENCH/conf/apache-backend.conf" "$conf" PORT="$port" RUN="$RUN_DIR" WWW="$WWW" \
        APACHE_THREADS="${APACHE_THREADS:-128}"
      taskset -c "$LOAD_CPU" /usr/sbin/apache2 -f "$conf" -DFOREGROUND >"$log" 2>&1 &
      register "$name" apache $! "$port" "$log" ;;
    *) die "BACKEND must be nginx or apache (got '$BACKEND')" ;;
  esac
  wait_port "$name" "$port"
  BACKEND_NAME=$name
}

start_haproxy() { # name backend-port [maxconn [tcp|http [global-line]]]
  local name=$1 port log conf
  port=$(pick_port "${HAPROXY_PORT:-}")
  log="$RUN_DIR/$name.log"; conf="$RUN_DIR/$name.cfg"
  render "$BENCH/conf/haproxy-${4:-tcp}.cfg" "$conf" PORT="$port" BACKEND_PORT="$2" RUN="$RUN_DIR" \
    MAXCONN="${3:-4096}" GLOBAL_EXTRA="${5:-}"
  taskset -c "$PROXY_CPU" haproxy -db -f "$conf" >"$log" 2>&1 &
  register "$name" haproxy $! "$port" "$log"
  wait_port "$name" "$port"
}

start_nginx_stream() { # name backend-port
  local name=$1 port log conf
  port=$(pick_port "${NGINX_PORT:-}")
  log="$RUN_DIR/$name.log"; conf="$RUN_DIR/$name.conf"
  render "$BENCH/conf/nginx-stream.conf" "$conf" PORT="$port" BACKEND_PORT="$2" RUN="$RUN_DIR" \
    NOFILE="$NOFILE" WORKER_CONNS=$((NOFILE - 100)) NGINX_MODULES="$NGINX_MODULES"
  taskset -c "$PROXY_CPU" nginx -p "$RUN_DIR" -e "$RUN_DIR/$name.error.log" -c "$conf" >"$log" 2>&1 &
  register "$name" nginx $! "$port" "$log"
  wait_port "$name" "$port"
}

start_nginx_http() { # name backend-port: nginx proxy_pass with upstream keepalive
  local name=$1 port log conf
  port=$(pick_port "${NGINX_HTTP_PORT:-}")
  log="$RUN_DIR/$name.log"; conf="$RUN_DIR/$name.conf"
  mkdir -p "$RUN_DIR/nginx-http-tmp"
  render "$BENCH/conf/nginx-http.conf" "$conf" PORT="$port" BACKEND_PORT="$2" RUN="$RUN_DIR" \
    NOFILE="$NOFILE" WORKER_CONNS=$((NOFILE - 100))
  taskset -c "$PROXY_CPU" nginx -p "$RUN_DIR" -e "$RUN_DIR/$name.error.log" -c "$conf" >"$log" 2>&1 &
  register "$name" nginx $! "$port" "$log"
  wait_port "$name" "$port"
}

# tinyproxy 1.11 runs one thread per client in one process: pinned to
# $PROXY_CPU, that process has one core, like the other proxies.
start_tinyproxy() { # name backend-port
  local name=$1 port log conf
  port=$(pick_port "${TINYPROXY_PORT:-}")
  log="$RUN_DIR/$name.log"; conf="$RUN_DIR/$name.conf"
  render "$BENCH/conf/tinyproxy.conf" "$conf" PORT="$port" BACKEND_PORT="$2" RUN="$RUN_DIR" \
    MAXCLIENTS=$((NOFILE / 2 - 100))
  taskset -c "$PROXY_CPU" tinyproxy -d -c "$conf" >"$log" 2>&1 &
  register "$name" tinyproxy $! "$port" "$log"
  wait_port "$name" "$port"
}

# squid -N: no master and no kids, the one process serves (`workers 1`).  It
# drops privileges to the `proxy` user, which must be able to write its
# cache.log: that lives in a directory of its own in the run dir.
start_squid() { # name backend-port
  local name=$1 port log conf dir
  port=$(pick_port "${SQUID_PORT:-}")
  log="$RUN_DIR/$name.log"; conf="$RUN_DIR/$name.conf"; dir="$RUN_DIR/$name"
  mkdir -p "$dir"
  chown proxy:proxy "$dir" 2>/dev/null || chmod 777 "$dir"
  render "$BENCH/conf/squid.conf" "$conf" PORT="$port" BACKEND_PORT="$2" RUN="$dir" NOFILE="$NOFILE"
  taskset -c "$PROXY_CPU" "$(command -v squid || echo /usr/sbin/squid)" -N -f "$conf" >"$log" 2>&1 &
  register "$name" squid $! "$port" "$log"
  wait_port "$name" "$port"
}

start_ferry() { # name cpus backend-port ferry-args...
  local name=$1 cpus=$2 bport=$3 log port="" i addr
  shift 3
  log="$RUN_DIR/$name.log"
  : >"$log"
  # Forward mode takes no backend: each request names its origin.
  local target=(-b 127.0.0.1 -P "$bport")
  case " $* " in *" -m forward "*) target=() ;; esac
  taskset -c "$cpus" "$PROXY_BIN" -l 127.0.0.1 -p "${FERRY_PORT:-0}" "${target[@]}" "$@" \
    >"$log" 2>&1 &
  register "$name" ferry $! "" "$log"
  for ((i = 0; i < 200; i++)); do
    addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1 || true)
    if [ -n "$addr" ]; then port=${addr##*:}; break; fi
    if ! kill -0 "${SRV_PID[$name]}" 2>/dev/null; then
      say "$name exited at start; last lines of $log:"; tail -n 15 "$log" >&2 || true
      die "$name failed to start: $PROXY_BIN -l 127.0.0.1 -p ${FERRY_PORT:-0} ${target[*]} $*"
    fi
    sleep 0.05
  done
  [ -n "$port" ] || { tail -n 15 "$log" >&2; die "$name printed no 'listening on' line within 10s"; }
  SRV_PORT[$name]=$port
  wait_port "$name" "$port"
}

# Parse the last `ferry: report begin ... end` block of a ferry log as key=value lines.
ferry_report() { # log
  awk '/ferry: report begin/{buf=""; on=1; next} /ferry: report end/{on=0; last=buf; next}
       on {sub(/^ferry: /, ""); buf = buf $1 "=" $2 "\n"} END {printf "%s", last}' "$1"
}

# ---------------------------------------------------------------- traffic
backend_requests() { # -> requests served so far by the backend (status page)
  backend_counts | awk '{print $1}'
}

backend_counts() { # -> "requests accepts" so far (status page); accepts -1 if unknown (Apache)
  local port=${SRV_PORT[$BACKEND_NAME]} body
  body=$(curl -s --max-time 5 "http://127.0.0.1:$port/bench-status?auto") || { echo "-1 -1"; return; }
  case "$BACKEND" in
    nginx) awk 'NR == 3 {print $3, $1}' <<<"$body" ;;
    apache) awk -F': ' '/^Total Accesses:/{print $2, -1}' <<<"$body" ;;
  esac
}

conn_log_lines() { # -> connections that carried a request so far (the backend's connection log), -1 if none
  if [ -n "${CONN_LOG_FILE:-}" ] && [ -f "$CONN_LOG_FILE" ]; then wc -l <"$CONN_LOG_FILE"; else echo -1; fi
}

# precheck name payload: status 200 and the exact bytes (compared to the file)
precheck() {
  local name=$1 payload=$2 port=${SRV_PORT[$1]} tmp res code size want
  tmp="$RUN_DIR/precheck.$name.$payload"
  want=$(stat -c %s "$WWW/$payload")
  res=$(curl -s --max-time 10 -o "$tmp" -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/$payload") || res="curl-failed(rc=$?) 0"
  code=${res%% *}; size=${res##* }
  if [ "$code" != 200 ] || [ "$size" != "$want" ] || ! cmp -s "$tmp" "$WWW/$payload"; then
    PRECHECK_MSG="$name /$payload: status $code, $size bytes (want 200, $want bytes identical to the file)"
    rm -f "$tmp"; return 1
  fi
  rm -f "$tmp"
}

# precheck_forward name payload: through forward proxy `name`, an absolute-form
# GET and a GET inside a CONNECT tunnel (curl -p) both give status 200 and the
# exact bytes of the file.
precheck_forward() {
  local name=$1 payload=$2 port=${SRV_PORT[$1]} bport=${SRV_PORT[$BACKEND_NAME]} tmp res code size want how
  tmp="$RUN_DIR/precheck.$name.$payload"
  want=$(stat -c %s "$WWW/$payload")
  for how in get connect; do
    local tunnel=(); [ "$how" = connect ] && tunnel=(-p)
    res=$(curl -s --max-time 10 "${tunnel[@]}" -x "http://127.0.0.1:$port" -o "$tmp" \
          -w '%{http_code} %{size_download}' "http://127.0.0.1:$bport/$payload") || res="curl-failed(rc=$?) 0"
    code=${res%% *}; size=${res##* }
    if [ "$code" != 200 ] || [ "$size" != "$want" ] || ! cmp -s "$tmp" "$WWW/$payload"; then
      PRECHECK_MSG="$name /$payload ($how): status $code, $size bytes (want 200, $want bytes identical to the file)"
      rm -f "$tmp"; return 1
    fi
  done
  rm -f "$tmp"
}

# run_wrk mode target payload round proxyname(or -) conns duration [wrk args]:
# modes forward-connect, forward-tunnel and forward-get run ferry-load (-m
# connect|tunnel|get) through the forward proxy to the backend instead of wrk.
# append one JSON line to $RUN_DIR/runs.jsonl
run_wrk() {
  local mode=$1 target=$2 payload=$3 round=$4 proxy=$5 conns=$6 dur=$7
  shift 7
  local port=${SRV_PORT[$target]} b0 b1 a0 a1 n0 n1 c0=0 c1=0 k0 k1 out json wrk_us wrk_user_us
  local u0=0 u1=0 ku0 ku1 sl0 sl1 sp0 sp1 foreign
  read -r b0 a0 <<<"$(backend_counts)"
  n0=$(conn_log_lines)
  k0=$(cpu_ticks "$BACKEND_NAME"); ku0=$(cpu_uticks "$BACKEND_NAME")
  [ "$proxy" != - ] && { c0=$(cpu_ticks "$proxy"); u0=$(cpu_uticks "$proxy"); }
  sl0=$(cpu_user_ticks "$LOAD_CPU"); sp0=$(cpu_user_ticks "$PROXY_CPU")
  # `times` in the same subshell prints wrk's user and system time (its only child).
  case "$mode" in
    forward-*)
      out=$(taskset -c "$LOAD_CPU" "$LOAD_BIN" -m "${mode#forward-}" -x "127.0.0.1:$port" \
            -T "127.0.0.1:${SRV_PORT[$BACKEND_NAME]}" --path "/$payload" -t 1 -c "$conns" -d "$dur" \
            --expect-length "$(stat -c %s "$WWW/$payload")" "$@" 2>&1; times) || true ;;
    *)
      out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${dur}s" -s "$BENCH/wrk_report.lua" "$@" \
            "http://127.0.0.1:$port/$payload" 2>&1; times) || true ;;
  esac
  sl1=$(cpu_user_ticks "$LOAD_CPU"); sp1=$(cpu_user_ticks "$PROXY_CPU")
  wrk_us=$(tail -n1 <<<"$out" | awk '{t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } printf "%d", t * 1e6}')
  wrk_user_us=$(tail -n1 <<<"$out" | awk '{split($1, a, "m"); sub("s", "", a[2]); printf "%d", (a[1] * 60 + a[2]) * 1e6}')
  [ "$proxy" != - ] && { c1=$(cpu_ticks "$proxy"); u1=$(cpu_uticks "$proxy"); }
  k1=$(cpu_ticks "$BACKEND_NAME"); ku1=$(cpu_uticks "$BACKEND_NAME")
  read -r b1 a1 <<<"$(backend_counts)"
  n1=$(conn_log_lines)
  # Other processes' user time on the two pinned CPUs during the run, in % of
  # the run: user time of the CPU minus that of our own processes on it.  The
  # load CPU runs wrk and the backend; the proxy CPU runs the proxy (if any).
  foreign=$(awk -v sl=$((sl1 - sl0)) -v sp=$((sp1 - sp0)) -v ku=$((ku1 - ku0)) -v u=$((u1 - u0)) \
    -v wu="${wrk_user_us:-0}" -v hz="$CLK_TCK" -v d="$dur" -v same=$([ "$LOAD_CPU" = "$PROXY_CPU" ] && echo 1 || echo 0) \
    'BEGIN { fl = (sl - ku - wu * hz / 1e6) / (d * hz) * 100; fp = (sp - u) / (d * hz) * 100
             if (same) { fl = (sl - ku - u - wu * hz / 1e6) / (d * hz) * 100; fp = fl }
             if (fl < 0) fl = 0; if (fp < 0) fp = 0; printf "%.1f %.1f", fl, fp }')
  read -r FOREIGN_LOAD FOREIGN_PROXY <<<"$foreign"
  json=$(sed -n 's/^WRKJSON //p; s/^LOADJSON //p' <<<"$out")
  if [ -z "$json" ]; then
    say "wrk gave no summary for $target /$payload: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
    json='{"requests":0,"bytes":0,"duration_us":1,"err_connect":1,"err_read":0,"err_write":0,"err_status":0,"err_timeout":0,"p50_us":0,"p90_us":0,"p99_us":0,"mean_us":0,"max_us":0}'
  fi
  printf '{"mode":"%s","target":"%s","payload":"%s","round":%s,"conns":%s,"proxy_cpu_ticks":%s,"backend_cpu_ticks":%s,"wrk_cpu_us":%s,"clk_tck":%s,"backend_before":%s,"backend_after":%s,"accepts_before":%s,"accepts_after":%s,"connlog_before":%s,"connlog_after":%s,"foreign_load_pct":%s,"foreign_proxy_pct":%s,"wrk":%s}\n' \
    "$mode" "$target" "$payload" "$round" "$conns" "$((c1 - c0))" "$((k1 - k0))" "${wrk_us:-0}" "$CLK_TCK" \
    "${b0:--1}" "${b1:--1}" "${a0:--1}" "${a1:--1}" "$n0" "$n1" "$FOREIGN_LOAD" "$FOREIGN_PROXY" "$json" \
    >>"${WRK_OUT:-$RUN_DIR/runs.jsonl}"
  LAST_WRK=$json
}

write_meta() { # mode -> $RUN_DIR/meta.json (machine, versions, date, settings)
  local ver rev
  ver=$("$PROXY_BIN" --version 2>/dev/null | awk '{print $2; exit}' || true)
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo uncommitted)
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || rev="$rev+changes"
  [ -x "$PROXY_BIN" ] && rev="$rev, binary built $(date -u -r "$PROXY_BIN" '+%Y-%m-%d %H:%M UTC')"
  FERRY_REV="${ver:-?} (git $rev)" \
  LOAD_CPU=$LOAD_CPU PROXY_CPU=$PROXY_CPU BACKEND=$BACKEND \
  python3 "$BENCH/report.py" meta "$RUN_DIR/meta.json" "$1"
}
