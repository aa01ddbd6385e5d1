#!/usr/bin/env python3
"""Open N idle keep-alive connections to 127.0.0.1:PORT and hold them.

Each connection sends one `GET PATH` (HTTP/1.1, keep-alive) and reads the
whole response, so that every connection has really been relayed to the
backend; then it stays open and idle.  When all are open the script prints
`READY <n>` on stdout and waits for SIGTERM/SIGINT (or --hold seconds), then
closes everything and exits.  Used by `make bench-mem` in its own process, so
the client's file descriptors are not counted against the proxy or the backend.

--spread binds each socket to a different source address in 127.0.0.0/8
(127.1.x.y) with IP_BIND_ADDRESS_NO_PORT, so source ports never run short.
Standard library only.
"""
import argparse
import resource
import selectors
import signal
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if need + 50 > soft:
        sys.exit(f"idle_conns: fd limit {soft} < {need + 50} needed")


def source_addr(i):
    # 127.1.0.1 .. 127.1.0.250, 127.1.1.1 ..; 250 connections per address
    a = i // 250
    return f"127.1.{a % 256}.{a // 256 + 1}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=9000)
    ap.add_argument("--path", default="/index.html")
    ap.add_argument("--spread", action="store_true")
    ap.add_argument("--no-request", action="store_true", help="connect only, send nothing")
    ap.add_argument("--batch", type=int, default=200, help="connections in flight at once")
    ap.add_argument("--hold", type=float, default=600.0, help="seconds to hold at most")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    raise_nofile(a.count)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    req = (f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\nUser-Agent: ferry-bench-idle\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    held, failed = [], 0
    deadline = time.monotonic() + a.timeout
    i = 0
    pending = {}  # sock -> [state, buffer]

    def finish(s, ok):
        nonlocal failed
        sel.unregister(s)
        del pending[s]
        if ok:
            held.append(s)
        else:
            failed += 1
            s.close()

    while (i < a.count or pending) and time.monotonic() < deadline and not stop:
        while i < a.count and len(pending) < a.batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if a.spread:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((source_addr(i), 0))
            s.setblocking(False)
            try:
                s.connect((a.host, a.port))
            except BlockingIOError:
                pass
            except OSError as e:
                print(f"idle_conns: connect {i}: {e}", file=sys.stderr)
                failed += 1
                s.close()
                i += 1
                continue
            pending[s] = ["connecting", b""]
            sel.register(s, selectors.EVENT_WRITE)
            i += 1
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            st = pending[s]
            if st[0] == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(s, False)
                    continue
                if a.no_request:
                    finish(s, True)
                    continue
                s.send(req)  # tiny; fits the socket buffer
                st[0] = "reading"
                sel.modify(s, selectors.EVENT_READ)
            else:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    finish(s, False)
                    continue
                if not chunk:
                    finish(s, False)
                    continue
                st[1] += chunk
                head, sep, body = st[1].partition(b"\r\n\r\n")
                if sep:
                    clen = 0
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            clen = int(v.strip())
                    if len(body) >= clen:
                        finish(s, head.startswith(b"HTTP/1.1 200"))
    for s in list(pending):
        finish(s, False)

    print(f"READY {len(held)} failed {failed}", flush=True)
    print(f"idle_conns: holding {len(held)} connections ({failed} failed)", file=sys.stderr)
    end = time.monotonic() + a.hold
    while not stop and time.monotonic() < end:
        time.sleep(0.2)
    # Check how many are still open (a proxy that dropped idle connections shows here).
    alive = 0
    for s in held:
        try:
            s.setblocking(False)
            if s.recv(1, socket.MSG_PEEK) == b"":
                continue
            alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print(f"idle_conns: {alive} of {len(held)} still open at the end", file=sys.stderr)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
