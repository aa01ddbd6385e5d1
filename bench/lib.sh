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
      render "$BENCH/conf/nginx-backend.conf" "$conf" PORT="$port" RUN="$RUN_DIR" WWW="$WWW" \
        NOFILE="$NOFILE" WORKER_CONNS=$((NOFILE - 100))
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

start_haproxy() { # name backend-port [maxconn]
  local name=$1 port log conf
  port=$(pick_port "${HAPROXY_PORT:-}")
  log="$RUN_DIR/$name.log"; conf="$RUN_DIR/$name.cfg"
  render "$BENCH/conf/haproxy-tcp.cfg" "$conf" PORT="$port" BACKEND_PORT="$2" RUN="$RUN_DIR" \
    MAXCONN="${3:-4096}"
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

start_ferry() { # name cpus backend-port ferry-args...
  local name=$1 cpus=$2 bport=$3 log port="" i addr
  shift 3
  log="$RUN_DIR/$name.log"
  : >"$log"
  taskset -c "$cpus" "$PROXY_BIN" -l 127.0.0.1 -p "${FERRY_PORT:-0}" -b 127.0.0.1 -P "$bport" "$@" \
    >"$log" 2>&1 &
  register "$name" ferry $! "" "$log"
  for ((i = 0; i < 200; i++)); do
    addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1 || true)
    if [ -n "$addr" ]; then port=${addr##*:}; break; fi
    if ! kill -0 "${SRV_PID[$name]}" 2>/dev/null; then
      say "$name exited at start; last lines of $log:"; tail -n 15 "$log" >&2 || true
      die "$name failed to start: $PROXY_BIN -l 127.0.0.1 -p ${FERRY_PORT:-0} -b 127.0.0.1 -P $bport $*"
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
  local port=${SRV_PORT[$BACKEND_NAME]} body
  body=$(curl -s --max-time 5 "http://127.0.0.1:$port/bench-status?auto") || { echo -1; return; }
  case "$BACKEND" in
    nginx) awk 'NR == 3 {print $3}' <<<"$body" ;;
    apache) awk -F': ' '/^Total Accesses:/{print $2}' <<<"$body" ;;
  esac
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

# run_wrk mode target payload round proxyname(or -) conns duration [wrk args]:
# append one JSON line to $RUN_DIR/runs.jsonl
run_wrk() {
  local mode=$1 target=$2 payload=$3 round=$4 proxy=$5 conns=$6 dur=$7
  shift 7
  local port=${SRV_PORT[$target]} b0 b1 c0=0 c1=0 k0 k1 out json wrk_us
  b0=$(backend_requests)
  k0=$(cpu_ticks "$BACKEND_NAME")
  [ "$proxy" != - ] && c0=$(cpu_ticks "$proxy")
  # `times` in the same subshell prints wrk's user and system time (its only child).
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${dur}s" -s "$BENCH/wrk_report.lua" "$@" \
        "http://127.0.0.1:$port/$payload" 2>&1; times) || true
  wrk_us=$(tail -n1 <<<"$out" | awk '{t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } printf "%d", t * 1e6}')
  [ "$proxy" != - ] && c1=$(cpu_ticks "$proxy")
  k1=$(cpu_ticks "$BACKEND_NAME")
  b1=$(backend_requests)
  json=$(sed -n 's/^WRKJSON //p' <<<"$out")
  if [ -z "$json" ]; then
    say "wrk gave no summary for $target /$payload: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
    json='{"requests":0,"bytes":0,"duration_us":1,"err_connect":1,"err_read":0,"err_write":0,"err_status":0,"err_timeout":0,"p50_us":0,"p90_us":0,"p99_us":0,"mean_us":0,"max_us":0}'
  fi
  printf '{"mode":"%s","target":"%s","payload":"%s","round":%s,"conns":%s,"proxy_cpu_ticks":%s,"backend_cpu_ticks":%s,"wrk_cpu_us":%s,"clk_tck":%s,"backend_before":%s,"backend_after":%s,"wrk":%s}\n' \
    "$mode" "$target" "$payload" "$round" "$conns" "$((c1 - c0))" "$((k1 - k0))" "${wrk_us:-0}" "$CLK_TCK" "$b0" "$b1" "$json" \
    >>"$RUN_DIR/runs.jsonl"
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
