#!/usr/bin/env bash
# bench/setup.sh: install what `make bench` needs, from Debian packages, idempotently.
#
# - nginx (+ its stream module), haproxy, wrk, siege, apache2-utils (ab), apache2, curl,
#   and the forward-proxy peers of `make bench-forward`: tinyproxy, squid.
# - `apt-get update` runs once, and only when something is missing.
# - No system service is left running: during the install /usr/sbin/policy-rc.d
#   answers 101 ("action forbidden") so package scripts do not start daemons;
#   anything that started anyway is stopped through its package pid file and
#   disabled.  Benchmark servers run only from configs under bench/, on 127.0.0.1.
# - Generates the payload files under bench/out/www (git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/bench/out"
WWW="$OUT/www"

say() { printf 'bench/setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get install needs it)"

# binary -> package
declare -A PKG=(
  [nginx]=nginx [haproxy]=haproxy [wrk]=wrk [siege]=siege [ab]=apache2-utils
  [apache2]=apache2 [curl]=curl [taskset]=util-linux [python3]=python3
  [tinyproxy]=tinyproxy [squid]=squid
)
missing=()
for bin in "${!PKG[@]}"; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("${PKG[$bin]}")
  fi
done
# nginx's stream module is a separate package on Debian (libnginx-mod-stream).
stream_mod() {
  ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1 && return 0
  command -v nginx >/dev/null 2>&1 && nginx -V 2>&1 | grep -q -- '--with-stream\( \|$\)' && return 0
  return 1
}
stream_mod || missing+=(libnginx-mod-stream)

POLICY=/usr/sbin/policy-rc.d
POLICY_BAK=""
restore_policy() {  # put back whatever policy-rc.d was there before (or none)
  [ -e "$POLICY.ferry-bench" ] || return 0
  if [ -n "$POLICY_BAK" ] && [ -e "$POLICY_BAK" ]; then mv -f "$POLICY_BAK" "$POLICY"
  else rm -f "$POLICY"
  fi
  rm -f "$POLICY.ferry-bench"
}

if [ ${#missing[@]} -gt 0 ]; then
  # de-duplicate
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing: ${missing[*]}"
  if [ -e "$POLICY" ]; then POLICY_BAK="$POLICY.bak.$$"; cp -p "$POLICY" "$POLICY_BAK"; fi
  trap restore_policy EXIT
  : >"$POLICY.ferry-bench"   # marker first: restore_policy acts only if it exists
  printf '#!/bin/sh\n# written by ferry bench/setup.sh during install\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  restore_policy
  trap - EXIT
else
  say "all packages present"
fi

# Make sure no package-started daemon is running (policy-rc.d should have
# prevented it; this also cleans up after an install done by someone else).
stop_pidfile() { # name pidfile
  local name=$1 f=$2 pid
  [ -r "$f" ] || return 0
  pid=$(head -n1 "$f" | tr -dc 0-9)
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
    say "stopping system $name (pid $pid from $f)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}
stop_pidfile nginx /run/nginx.pid
stop_pidfile apache2 /run/apache2/apache2.pid
stop_pidfile haproxy /run/haproxy.pid
stop_pidfile tinyproxy /run/tinyproxy/tinyproxy.pid
stop_pidfile squid /run/squid.pid
if command -v systemctl >/dev/null 2>&1; then
  for s in nginx apache2 haproxy tinyproxy squid; do systemctl disable "$s" >/dev/null 2>&1 || true; done
fi
if command -v update-rc.d >/dev/null 2>&1; then
  for s in nginx apache2 haproxy tinyproxy squid; do [ -e "/etc/init.d/$s" ] && update-rc.d "$s" disable >/dev/null 2>&1 || true; done
fi

# Sanity: every tool is there now.
for bin in nginx haproxy wrk siege ab curl taskset python3; do
  command -v "$bin" >/dev/null 2>&1 || die "$bin still missing after install"
done
for bin in tinyproxy squid; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || die "$bin still missing after install"
done
[ -x /usr/sbin/apache2 ] || die "apache2 still missing after install"
stream_mod || die "nginx stream module missing (package libnginx-mod-stream)"

# Payloads: deterministic bytes, regenerated only if size differs.
mkdir -p "$WWW"
python3 - "$WWW" <<'PY'
import os, sys, hashlib
www = sys.argv[1]
def block(n):
    out = bytearray(); seed = b"ferry-bench"
    while len(out) < n:
        seed = hashlib.sha256(seed).digest(); out += seed.hex().encode()
    return bytes(out[:n])
files = {"index.html": None, "1k.bin": 1024, "16k.bin": 16384,
         "128k.bin": 131072, "1m.bin": 1048576}
for name, size in files.items():
    p = os.path.join(www, name)
    if size is None:
        data = b"<!doctype html><title>ferry bench</title><p>ferry bench backend</p>\n"
    else:
        data = block(size)
    if not os.path.exists(p) or os.path.getsize(p) != len(data):
        with open(p + ".tmp", "wb") as f: f.write(data)
        os.replace(p + ".tmp", p)
PY
say "payloads in $WWW: $(cd "$WWW" && ls | tr '\n' ' ')"
say "versions: $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v 2>/dev/null | head -1 | awk '{print $1,$3}'), $(wrk -v 2>&1 | head -1 | awk '{print $1,$2}'), $(/usr/sbin/apache2 -v | head -1 | sed 's/.*: //')"
say "ok"
