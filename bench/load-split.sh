#!/usr/bin/env bash
# bench/load-split.sh: where the CPU of one small request goes, per process:
# wrk, the backend (both on the load CPU) and the proxy (on its own CPU), in
# microseconds per request, with context switches per request. Shows whether
# the load CPU or the proxy bounds the rate.  TG="direct ferry-http-10k
# haproxy-http nginx-http ferry-off haproxy" P=1k.bin D=5 bash bench/load-split.sh
# Targets also: ferry-auto, ferry-http (defaults), ferry-http-x, ferry-busy
# and ferry-http-busy (--busy-poll $BP, default 50), and haproxy-busy /
# haproxy-http-busy (HAProxy's busy-polling, which spins even when idle:
# measure those alone, or they take the CPU from the other targets). FA adds
# ferry flags, R sets the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
trap cleanup EXIT
raise_nofile
new_run_dir load-split
start_backend backend
bport=${SRV_PORT[backend]}
TG=${TG:-ferry-http-10k haproxy-http}
for t in $TG; do
  case $t in
    ferry-http-10k) start_ferry $t $PROXY_CPU $bport -m http -w 1 --splice auto --pool-max-requests 10000 ${FA:-} ;;
    ferry-http-bare) start_ferry $t $PROXY_CPU $bport -m http -w 1 --splice auto --pool-max-requests 10000 --no-xff --no-xfp --no-via ${FA:-} ;;
    ferry-off) start_ferry $t $PROXY_CPU $bport -w 1 --splice off ;;
    ferry-http) start_ferry $t $PROXY_CPU $bport -m http -w 1 ${FA:-} ;;
    ferry-http-x) start_ferry $t $PROXY_CPU $bport -m http -w 1 --pool-max-requests 10000 ${FA:-} ;;
    ferry-auto) start_ferry $t $PROXY_CPU $bport -w 1 --splice auto ${FA:-} ;;
    ferry-busy) start_ferry $t $PROXY_CPU $bport -w 1 --splice auto --busy-poll ${BP:-50} ${FA:-} ;;
    ferry-http-busy) start_ferry $t $PROXY_CPU $bport -m http -w 1 --pool-max-requests 10000 --busy-poll ${BP:-50} ${FA:-} ;;
    haproxy-busy) start_haproxy $t $bport 4096 tcp busy-polling ;;
    haproxy-http-busy) start_haproxy $t $bport 4096 http busy-polling ;;
    haproxy-http) start_haproxy $t $bport 4096 http ;;
    haproxy) start_haproxy $t $bport ;;
    nginx-http) start_nginx_http $t $bport ;;
    direct) SRV_PORT[direct]=$bport ;;
  esac
done
bw=$(children_of ${SRV_PID[backend]} | head -1)
ctx() { cat /proc/$1/task/*/status | awk '/^voluntary_ctxt_switches/{v+=$2} /^nonvoluntary_ctxt_switches/{n+=$2} END{print v+0, n+0}'; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
uticks() { awk '{print $14}' /proc/$1/stat; }
P=${P:-1k.bin}
for r in $(seq ${R:-3}); do
 for t in $TG; do
  url=http://127.0.0.1:${SRV_PORT[$t]}/$P
  taskset -c $LOAD_CPU wrk -t1 -c50 -d1s $url >/dev/null 2>&1
  if [ $t != direct ]; then pp=$(server_pids $t | tail -1); fi
  b0=$(ticks $bw); read bv0 bn0 < <(ctx $bw)
  p0=0;pv0=0;pn0=0;pu0=0; if [ $t != direct ]; then p0=$(ticks $pp); pu0=$(uticks $pp); read pv0 pn0 < <(ctx $pp); fi
  out=$( { /usr/bin/time -f "TIME %U %S %w %c" taskset -c $LOAD_CPU wrk -t1 -c50 -d${D:-5}s $url; } 2>&1)
  b1=$(ticks $bw); read bv1 bn1 < <(ctx $bw)
  p1=0;pv1=0;pn1=0;pu1=0
  if [ $t != direct ]; then p1=$(ticks $pp); pu1=$(uticks $pp); read pv1 pn1 < <(ctx $pp); fi
  req=$(awk '/requests in/{print $1}' <<<"$out")
  read _ wu ws wv wn < <(grep ^TIME <<<"$out")
  python3 - "$t" "$req" "$wu" "$ws" "$wv" "$wn" $((b1-b0)) $((bv1-bv0)) $((bn1-bn0)) $((p1-p0)) $((pv1-pv0)) $((pn1-pn0)) $((pu1-pu0)) <<'PY'
import sys
t,req,wu,ws,wv,wn,bt,bv,bn,pt,pv,pn,pu=sys.argv[1:]
req=int(req); us=lambda s: float(s)*1e6/req
print(f"{t:16s} req/s {req/float(__import__('os').environ.get('D','5')):8.0f} wrk {us(float(wu)+float(ws)):5.2f}us(u{us(wu):.2f} s{us(ws):.2f}) vcs/req {int(wv)/req:.3f} | be {int(bt)*1e4/req:5.2f}us vcs/req {int(bv)/req:.3f} ncs {int(bn)/req:.3f} | px {int(pt)*1e4/req:5.2f}us(u{int(pu)*1e4/req:.2f}) load {us(float(wu)+float(ws))+int(bt)*1e4/req:5.2f}us wrk-ics {int(wn)/req:.3f} vcs/req {int(pv)/req:.3f} ncs {int(pn)/req:.3f}")
PY
 done
done
