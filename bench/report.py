#!/usr/bin/env python3
"""Turn a bench run directory into tables (markdown), medians and ratios.

    report.py meta  OUT.json MODE      write machine/versions/date
    report.py bench RUN_DIR            keep-alive throughput table
    report.py conn  RUN_DIR            new-connections table
    report.py all   RUN_DIR            ferry configuration matrix
    report.py mem   RUN_DIR            RSS per idle connection
    report.py forward RUN_DIR          forward proxies (ferry-load): CONNECT, tunnels, GETs
    report.py readme OUT_DIR           compact README block from the last runs

Inputs in RUN_DIR: runs.jsonl (one line per wrk/siege run, written by
bench/lib.sh run_wrk), meta.json, servers.tsv, excluded.tsv, mem.tsv.
Writes RUN_DIR/table.md and RUN_DIR/summary.json; prints the table.
Exit status 1 when any row FAILED.  Standard library only.
"""
import json
import os
import platform
import statistics
import subprocess
import sys

LABEL = {
    "direct": "direct (no proxy)",
    "ferry-off": "ferry tcp, splice off",
    "ferry-auto": "ferry tcp, splice auto",
    "ferry-on": "ferry tcp, splice on",
    "ferry-busy": "ferry tcp, splice auto, --busy-poll 50",
    "haproxy": "HAProxy mode tcp",
    "nginx": "nginx stream",
    "ferry-http-off": "ferry http, splice off",
    "ferry-http-auto": "ferry http, splice auto",
    "ferry-http-on": "ferry http, splice on",
    "ferry-http-10k": "ferry http, splice auto, --pool-max-requests 10000",
    "ferry-http-busy": "ferry http, splice auto, --pool-max-requests 10000, --busy-poll 50",
    "haproxy-http": "HAProxy mode http",
    "nginx-http": "nginx proxy_pass",
    "backend": "backend",
    "ferry-fwd": "ferry -m forward",
    "tinyproxy": "tinyproxy",
    "squid": "squid",
}

TCP_REFS = ("haproxy", "nginx")
HTTP_REFS = ("haproxy-http", "nginx-http")
REF_NAME = {"haproxy": "HAProxy", "nginx": "nginx", "haproxy-http": "HAProxy http", "nginx-http": "nginx proxy_pass"}


def is_http(t):
    return t.endswith("-http") or "-http-" in t


def label(t):
    if t in LABEL:
        return LABEL[t]
    if t.startswith("w") and t.count("-") == 2:
        w, s, b = t.split("-")
        return f"ferry -w {w[1:]} --splice {s} --buffer-size {b[:-1]}KiB"
    return t


def short(t):
    if t == "ferry-http-10k":
        return "ferry http 10k"
    return t.replace("ferry-http-", "ferry http ").replace("ferry-", "ferry ")


def sh(cmd):
    try:
        r = subprocess.run(cmd + " 2>&1", shell=True, capture_output=True, text=True, timeout=10)
        return r.stdout.strip()
    except Exception:
        return "?"


def write_meta(path, mode):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024)
                break
    meta = {
        "mode": mode,
        "date": sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        "machine": f"{os.cpu_count()} vCPU {cpu}, {mem} GiB RAM, Linux {platform.release()}",
        "versions": {
            "ferry": os.environ.get("FERRY_REV", "?"),
            "nginx": sh("nginx -v").replace("nginx version: nginx/", ""),
            "haproxy": sh("haproxy -v | head -1 | awk '{print $3}'"),
            "apache": sh("/usr/sbin/apache2 -v | head -1 | sed 's/.*Apache.//; s/ .*//'"),
            "wrk": sh("wrk -v | head -1 | awk '{print $2}'"),
            "siege": sh("siege -V | head -1 | awk '{print $2}'"),
            "tinyproxy": sh("tinyproxy -v | awk '{print $2}'"),
            "squid": sh("$(command -v squid || echo /usr/sbin/squid) -v | head -1 | awk '{print $4}'"),
        },
        "settings": {k: os.environ.get(k, "") for k in
                     ("CONNS", "DURATION", "ROUNDS", "PAYLOADS", "TARGETS", "IDLE_CONNS", "FERRY_ARGS",
                      "HTTP_PAYLOADS", "FERRY_HTTP_ARGS", "FERRY_FWD_ARGS", "FWD_CONNECT_PAYLOADS",
                      "FWD_TUNNEL_PAYLOADS", "FWD_GET_PAYLOADS")},
        "load_cpu": os.environ.get("LOAD_CPU", ""),
        "proxy_cpu": os.environ.get("PROXY_CPU", ""),
        "backend": os.environ.get("BACKEND", "nginx"),
    }
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)


def load(run_dir):
    runs = []
    p = os.path.join(run_dir, "runs.jsonl")
    if os.path.exists(p):
        with open(p) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(run_dir, "meta.json")) as f:
        meta = json.load(f)
    servers = {}
    p = os.path.join(run_dir, "servers.tsv")
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 5:
                    continue
                name, kind, hwm, rss, rc = parts[:5]
                rep = dict(kv.split("=", 1) for kv in (parts[5].split(",") if len(parts) > 5 and parts[5] else []))
                servers[name] = {"kind": kind, "hwm_kib": int(hwm or 0), "rss_kib": int(rss or 0),
                                 "exit": int(rc or 0), "report": rep}
    excluded = {}
    p = os.path.join(run_dir, "excluded.tsv")
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                if "\t" in line:
                    t, msg = line.rstrip("\n").split("\t", 1)
                    excluded[t] = msg
    return runs, meta, servers, excluded


def header(meta, title):
    v = meta["versions"]
    s = meta.get("settings", {})
    backend = meta.get("backend", "nginx")
    bdesc = (f"nginx {v.get('nginx')}, 1 worker" if backend == "nginx"
             else f"Apache {v.get('apache')}, event MPM, 1 child process")
    lines = [
        f"### {title}",
        "",
        f"- date: {meta['date']}; machine: {meta['machine']}",
        f"- versions: ferry {v.get('ferry')}, HAProxy {v.get('haproxy')}, nginx {v.get('nginx')}, "
        f"Apache {v.get('apache')}, wrk {v.get('wrk')}; backend: {bdesc}",
        f"- load: wrk -t1 -c{s.get('CONNS')} -d{s.get('DURATION')}s, {s.get('ROUNDS') or 1} interleaved round(s), "
        f"medians; wrk + backend on CPU {meta.get('load_cpu')}, proxy on CPU {meta.get('proxy_cpu')}"
        + (f"; FERRY_ARGS={s.get('FERRY_ARGS')}" if s.get("FERRY_ARGS") else "")
        + (f"; FERRY_HTTP_ARGS={s.get('FERRY_HTTP_ARGS')}" if s.get("FERRY_HTTP_ARGS") else ""),
        "",
    ]
    return lines


def rate(w):
    return w["requests"] / max(w["duration_us"] / 1e6, 1e-9)


def errors(w):
    return w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]


def total_cpu(r):
    """µs of CPU per request used by wrk + backend + proxy in this run (None if unknown)."""
    if "wrk_cpu_us" not in r or not r["wrk"]["requests"]:
        return None
    ticks = r["proxy_cpu_ticks"] + r["backend_cpu_ticks"]
    return (ticks / r["clk_tck"] * 1e6 + r["wrk_cpu_us"]) / r["wrk"]["requests"]


def count_ok(r):
    """The backend served what wrk reports (give or take the requests in flight)."""
    if r["backend_before"] < 0 or r["backend_after"] < 0:
        return False
    delta = r["backend_after"] - r["backend_before"] - 1  # the status request itself
    return abs(delta - r["wrk"]["requests"]) <= r["conns"] + 5 and r["wrk"]["requests"] > 0


def backend_conns(r):
    """Backend connections that carried a request during this run (connection log), or None."""
    a, b = r.get("connlog_before", -1), r.get("connlog_after", -1)
    return b - a if a >= 0 and b >= 0 else None


def backend_accepts(r):
    """Connections the backend accepted during this run (stub_status), minus the status probe's own."""
    a, b = r.get("accepts_before", -1), r.get("accepts_after", -1)
    return b - a - 1 if a >= 0 and b >= 0 else None


def reuse(r):
    n = backend_conns(r)
    return None if n is None or not r["wrk"]["requests"] else 1 - n / r["wrk"]["requests"]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


def summarize(runs, mode, targets, payloads, excluded, refs=TCP_REFS + HTTP_REFS + ("direct",)):
    """Per (payload, target): medians, sums and paired ratios (to each of refs)."""
    by = {}
    for r in runs:
        if r.get("mode") != mode:
            continue
        by.setdefault((r["payload"], r["target"]), {})[r["round"]] = r
    out = {}
    for p in payloads:
        for t in targets:
            rounds = by.get((p, t), {})
            if t in excluded:
                out[(p, t)] = {"status": "FAILED", "why": excluded[t]}
                continue
            if not rounds:
                continue
            rs = [rounds[k] for k in sorted(rounds)]
            row = {
                "rounds": len(rs),
                "rps": med([rate(r["wrk"]) for r in rs]),
                "mbps": med([r["wrk"]["bytes"] / max(r["wrk"]["duration_us"], 1) for r in rs]),  # bytes/us = MB/s
                "p50_ms": med([r["wrk"]["p50_us"] / 1000 for r in rs]),
                "p99_ms": med([r["wrk"]["p99_us"] / 1000 for r in rs]),
                "errors": sum(errors(r["wrk"]) for r in rs),
                "non2xx": sum(r["wrk"]["err_status"] for r in rs),
                "count_ok": all(count_ok(r) for r in rs),
                "cpu_us": None if t == "direct" else med(
                    [r["proxy_cpu_ticks"] / r["clk_tck"] * 1e6 / r["wrk"]["requests"]
                     for r in rs if r["wrk"]["requests"]]),
                "backend_cpu_us": med([r["backend_cpu_ticks"] / r["clk_tck"] * 1e6 / r["wrk"]["requests"]
                                       for r in rs if r["wrk"]["requests"]]),
                "total_cpu_us": med([total_cpu(r) for r in rs]),
                "requests": med([r["wrk"]["requests"] for r in rs]),
                "backend_conns": med([backend_conns(r) for r in rs]),
                "backend_accepts": med([backend_accepts(r) for r in rs]),
                "reuse": med([reuse(r) for r in rs]),
            }
            # CPU the proxy adds to the whole machine (wrk + backend + proxy), paired with direct per round
            dref = by.get((p, "direct"), {})
            row["added_cpu_us"] = None if t == "direct" else med(
                [total_cpu(rounds[k]) - total_cpu(dref[k]) for k in rounds
                 if k in dref and total_cpu(rounds[k]) is not None and total_cpu(dref[k]) is not None])
            for ref in refs:
                refr = by.get((p, ref), {})
                pairs = [rate(rounds[k]["wrk"]) / rate(refr[k]["wrk"])
                         for k in rounds if k in refr and rate(refr[k]["wrk"]) > 0]
                row["vs_" + ref] = med(pairs)
            why = []
            if row["errors"]:
                why.append(f"{row['errors']} socket errors")
            if row["non2xx"]:
                why.append(f"{row['non2xx']} non-2xx")
            if not row["count_ok"]:
                why.append("backend request count does not match wrk")
            row["status"] = "FAILED" if why else "ok"
            row["why"] = "; ".join(why)
            out[(p, t)] = row
    return out


def order_targets(runs, mode, excluded, wanted=None):
    seen = []
    for t in (wanted or []):
        if t not in seen:
            seen.append(t)
    for r in runs:
        if r.get("mode") == mode and r["target"] not in seen:
            seen.append(r["target"])
    for t in excluded:
        if t not in seen:
            seen.append(t)
    return seen


def order_payloads(runs, mode):
    seen = []
    for r in runs:
        if r.get("mode") == mode and r["payload"] not in seen:
            seen.append(r["payload"])
    return seen


def ratio(x):
    return "-" if x is None else f"{x:.2f}"


def kib_to_mib(k):
    return f"{k / 1024:.1f}"


def emit(run_dir, lines, summary, failed):
    text = "\n".join(lines) + "\n"
    with open(os.path.join(run_dir, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(text)
    if failed:
        print("bench: FAILED rows: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def ferry_vs_peers(lines, rows, payloads, ferry_ts, refs, unit):
    """Paired req/s ratios and CPU ratios of each ferry target to the reference peers."""
    names = [REF_NAME[r] for r in refs]
    lines += ["", f"Ratios of ferry's {unit}/s to its peers (median of per-round ratios; > 1 means ferry is faster):", "",
              "| payload | " + " | ".join(f"{short(t)} / {n}" for t in ferry_ts for n in names) + " |",
              "|---|" + "--:|" * (len(refs) * len(ferry_ts))]
    for p in payloads:
        cells = []
        for t in ferry_ts:
            row = rows.get((p, t), {})
            cells += [ratio(row.get("vs_" + ref)) for ref in refs]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += ["", f"CPU per {unit} of ferry relative to its peers (< 1 means ferry costs less). "
              "'proxy' counts the proxy process alone; 'added' counts what the proxy adds to the whole "
              "machine (wrk + backend + proxy, minus the same for direct in the same round):", "",
              "| payload | " + " | ".join(f"{short(t)}: {k} / {n}" for t in ferry_ts
                                         for n in names for k in ("proxy", "added")) + " |",
              "|---|" + "--:|" * (2 * len(refs) * len(ferry_ts))]
    for p in payloads:
        cells = []
        for t in ferry_ts:
            for ref in refs:
                for key in ("cpu_us", "added_cpu_us"):
                    mine = rows.get((p, t), {}).get(key)
                    other = rows.get((p, ref), {}).get(key)
                    cells.append(ratio(mine / other) if mine and other and other > 0 else "-")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")


def throughput(run_dir, mode):
    runs, meta, servers, excluded = load(run_dir)
    wanted = (meta.get("settings", {}).get("TARGETS") or "").split()
    targets = order_targets(runs, mode, excluded, wanted)
    payloads = order_payloads(runs, mode)
    if not payloads:
        payloads = (meta.get("settings", {}).get("PAYLOADS") or "").split()
    rows = summarize(runs, mode, targets, payloads, excluded)
    conn = mode == "conn"
    title = "New connections per second (Connection: close)" if conn else "Keep-alive throughput per payload"
    lines = header(meta, title)
    unit = "conn" if conn else "req"
    failed = []
    tcp_ts = [t for t in targets if not is_http(t)]
    http_ts = [t for t in targets if is_http(t)]

    def table(ts, refs, reuse_cols, pls):
        names = [REF_NAME[r] for r in refs]
        extra_h = " backend conns | reuse % |" if reuse_cols else ""
        lines.extend([f"| payload | target | {unit}/s | MB/s | p50 ms | p99 ms | errors | non-2xx "
                      f"| proxy CPU µs/{unit} | added CPU µs/{unit} |{extra_h} vs {names[0]} |"
                      + (f" vs {names[1]} |" if reuse_cols else "") + " vs direct | status |",
                      "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|--:|" if reuse_cols else "")
                      + "--:|" * (len(refs) if reuse_cols else 1) + "--:|---|"])
        ncols = 11 + (3 if reuse_cols else 0)
        for p in pls:
            for t in ts:
                row = rows.get((p, t))
                if row is None:
                    continue
                if "rps" not in row:
                    lines.append(f"| {p} | {label(t)} | " + "- | " * (ncols - 1) + "FAILED |")
                    failed.append(f"{p} {t}: {row['why']}")
                    continue
                extra = (f" {fmt(row['backend_conns'], '.0f')} | {pct(row['reuse'])} |" if reuse_cols else "")
                vs = " | ".join(ratio(row["vs_" + r]) for r in (refs if reuse_cols else refs[:1]))
                lines.append(
                    f"| {p} | {label(t)} | {row['rps']:.0f} | {row['mbps']:.1f} | {row['p50_ms']:.2f} | "
                    f"{row['p99_ms']:.2f} | {row['errors']} | {row['non2xx']} | {fmt(row['cpu_us'], '.1f')} | "
                    f"{fmt(row['added_cpu_us'], '.1f')} |{extra} {vs} | {ratio(row['vs_direct'])} | {row['status']} |")
                if row["status"] != "ok":
                    failed.append(f"{p} {t}: {row['why']}")

    table(tcp_ts, TCP_REFS, False, payloads)
    ferry_ts = [t for t in tcp_ts if t.startswith("ferry")]
    if ferry_ts and any(t in targets for t in TCP_REFS):
        ferry_vs_peers(lines, rows, payloads, ferry_ts, TCP_REFS, unit)
    if http_ts:
        hp = [p for p in payloads if any((p, t) in rows for t in http_ts)]
        lines += ["", "#### HTTP mode (ferry -m http, HAProxy mode http, nginx proxy_pass)", "",
                  "Same rounds, same direct baseline. 'backend conns' is the median number of backend connections "
                  "that carried a request during one timed run (the backend's connection log); "
                  "reuse % = 1 - backend conns / requests.", ""]
        table((["direct"] if "direct" in targets else []) + http_ts, HTTP_REFS, True, hp)
        ferry_h = [t for t in http_ts if t.startswith("ferry")]
        if ferry_h and any(t in targets for t in HTTP_REFS):
            ferry_vs_peers(lines, {k: v for k, v in rows.items() if k[0] in hp}, hp, ferry_h, HTTP_REFS, unit)
    if servers:
        lines += ["", "Peak RSS of each server over the whole run (VmHWM of the process that carries the traffic; "
                  "for nginx the worker):", "", "| server | peak RSS MiB | notes |", "|---|--:|---|"]
        for name, s in servers.items():
            notes = []
            if s["kind"] == "ferry":
                rep = s["report"]
                if s["exit"] != 0:
                    notes.append(f"exit status {s['exit']} on SIGTERM")
                    failed.append(f"{name}: exit status {s['exit']} on SIGTERM")
                if "bytes_backend_to_client" in rep:
                    b = int(rep.get("bytes_backend_to_client", 0))
                    sp = int(rep.get("bytes_spliced_backend_to_client", 0) or 0)
                    notes.append(f"{b / 1e9:.2f} GB backend->client, {100 * sp / b if b else 0:.0f}% spliced")
                hits, misses = int(rep.get("backend_pool_hits", 0) or 0), int(rep.get("backend_pool_misses", 0) or 0)
                if is_http(name) and hits + misses:
                    notes.append(f"{int(rep.get('http_requests', 0) or 0)} requests, backend pool hits "
                                 f"{100 * hits / (hits + misses):.2f}% ({misses} new backend connections), "
                                 f"5xx {rep.get('http_responses_5xx', '?')}")
                for k in ("errors", "client_aborts"):
                    if k in rep:
                        notes.append(f"{k} {rep[k]}")
                if not rep:
                    notes.append("no statistics report on SIGTERM")
            lines.append(f"| {label(name)} | {kib_to_mib(s['hwm_kib'])} | {', '.join(notes)} |")
    sieges = [r for r in runs if r.get("mode") == "siege"]
    if sieges:
        lines += ["", f"siege -b -c 10 -r {sieges[0].get('reps', '?')}, {sieges[0]['payload']} "
                  "(a short second opinion, keep-alive; siege times to 10 ms, so trans/s is coarse):", "",
                  "| target | trans/s | OK | failed |", "|---|--:|--:|--:|"]
        for r in sieges:
            s = r["siege"]
            if s.get("error"):
                lines.append(f"| {label(r['target'])} | - | - | {s['error']} |")
                failed.append(f"siege {r['target']}: {s['error']}")
                continue
            lines.append(f"| {label(r['target'])} | {s.get('transaction_rate', '-')} | "
                         f"{s.get('successful_transactions', '-')} | {s.get('failed_transactions', '-')} |")
            if s.get("failed_transactions"):
                failed.append(f"siege {r['target']}: {s.get('failed_transactions')} failed transactions")
    lines += disturbance_notes(run_dir, runs, mode)
    summary = {f"{p} {t}": v for (p, t), v in rows.items()}
    return emit(run_dir, lines, summary, failed)


def disturbance_notes(run_dir, runs, mode):
    """Runs repeated (or kept) because other processes ran on the pinned CPUs."""
    limit = float(os.environ.get("DISTURBED_PCT") or 5)
    repeated = []
    p = os.path.join(run_dir, "disturbed.jsonl")
    if os.path.exists(p):
        with open(p) as f:
            repeated = [json.loads(line) for line in f if line.strip()]
    def of_mode(r):  # a mode ending in '-' is a prefix (forward-: all three forward measures)
        m = r.get("mode", "")
        return m == mode or (mode.endswith("-") and m.startswith(mode))
    repeated = [r for r in repeated if of_mode(r)]
    kept = [r for r in runs if of_mode(r) and
            max(r.get("foreign_load_pct", 0), r.get("foreign_proxy_pct", 0)) > limit]
    ok = [r for r in runs if of_mode(r) and "foreign_load_pct" in r]
    if not ok:
        return []
    worst = max(max(r["foreign_load_pct"], r["foreign_proxy_pct"]) for r in ok)
    out = ["", f"Other load on the pinned CPUs (user time of processes that are not part of the benchmark): "
           f"{len(repeated)} run(s) were repeated because it exceeded {limit:g}% of a CPU; "
           f"in the runs kept, the highest was {worst:.1f}%."]
    if kept:
        out.append("Kept although disturbed (retries exhausted): " + "; ".join(
            f"round {r['round']} {r['payload']} {r['target']} ({r['foreign_load_pct']:.0f}% / "
            f"{r['foreign_proxy_pct']:.0f}%)" for r in kept) + ".")
    return out


def matrix(run_dir):
    runs, meta, servers, excluded = load(run_dir)
    targets = order_targets(runs, "all", excluded)
    payloads = order_payloads(runs, "all")
    rows = summarize(runs, "all", targets, payloads, excluded)
    lines = header(meta, "ferry configuration matrix (workers x splice x buffer size)")
    lines += ["Workers 1 run on the proxy CPU; workers = all cores run on every CPU (sharing CPU 0 with wrk and "
              "the backend).", "",
              "| payload | configuration | req/s | MB/s | p99 ms | proxy CPU µs/req | vs HAProxy | status |",
              "|---|---|--:|--:|--:|--:|--:|---|"]
    failed, best = [], {}
    for p in payloads:
        cands = [(t, rows[(p, t)]) for t in targets if (p, t) in rows]
        cands.sort(key=lambda x: -(x[1].get("rps") or 0))
        for t, row in cands:
            if "rps" not in row:
                lines.append(f"| {p} | {label(t)} | - | - | - | - | - | FAILED |")
                failed.append(f"{p} {t}: {row['why']}")
                continue
            lines.append(f"| {p} | {label(t)} | {row['rps']:.0f} | {row['mbps']:.1f} | {row['p99_ms']:.2f} | "
                         f"{fmt(row['cpu_us'], '.1f')} | {ratio(row['vs_haproxy'])} | {row['status']} |")
            if row["status"] != "ok":
                failed.append(f"{p} {t}: {row['why']}")
            elif t != "haproxy" and p not in best:
                best[p] = (t, row)
    lines += ["", "Best ferry configuration per payload (highest median req/s among rows without failures):", "",
              "| payload | best configuration | req/s | proxy CPU µs/req | vs HAProxy |", "|---|---|--:|--:|--:|"]
    for p in payloads:
        if p in best:
            t, row = best[p]
            lines.append(f"| {p} | {label(t)} | {row['rps']:.0f} | {fmt(row['cpu_us'], '.1f')} | "
                         f"{ratio(row['vs_haproxy'])} |")
    lines += disturbance_notes(run_dir, runs, "all")
    return emit(run_dir, lines, {f"{p} {t}": v for (p, t), v in rows.items()}, failed)


def mem(run_dir):
    runs, meta, servers, excluded = load(run_dir)
    n = meta.get("settings", {}).get("IDLE_CONNS") or "9000"
    lines = header(meta, f"Memory: RSS per idle connection ({n} through each proxy) and peak RSS under load")
    lines += ["RSS is VmRSS of the proxy process (nginx: its worker). The idle client holds each connection open "
              "after one request of index.html; kernel socket memory is not in RSS.", "",
              "| proxy | RSS at start MiB | peak RSS under 1 MiB load MiB | RSS before idle MiB | "
              f"RSS with idle conns MiB | idle conns held | bytes per idle conn | RSS after close MiB |",
              "|---|--:|--:|--:|--:|--:|--:|--:|"]
    failed = []
    summary = {}
    p = os.path.join(run_dir, "mem.tsv")
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                t, rss0, hwm_load, rss1, rss2, rss3, hwm, opened = line.split("\t")
                rss0, hwm_load, rss1, rss2, rss3, opened = map(int, (rss0, hwm_load, rss1, rss2, rss3, opened))
                per = (rss2 - rss1) * 1024 / opened if opened else None
                summary[t] = {"rss_start_kib": rss0, "hwm_load_kib": hwm_load, "rss_before_kib": rss1,
                              "rss_idle_kib": rss2, "rss_after_kib": rss3, "idle": opened, "bytes_per_conn": per}
                lines.append(f"| {label(t)} | {kib_to_mib(rss0)} | {kib_to_mib(hwm_load)} | {kib_to_mib(rss1)} | "
                             f"{kib_to_mib(rss2)} | {opened} | {fmt(per, '.0f')} | {kib_to_mib(rss3)} |")
                if str(opened) != str(n):
                    failed.append(f"{t}: only {opened} of {n} idle connections were established")
    for t, msg in excluded.items():
        lines.append(f"| {label(t)} | - | - | - | - | - | - | - | FAILED: {msg}")
        failed.append(f"{t}: {msg}")
    rows = summarize(runs, "mem", [r["target"] for r in runs], ["1m.bin"], {})
    for (pl, t), row in rows.items():
        if row.get("status") != "ok":
            failed.append(f"1 MiB load through {t}: {row.get('why')}")
    for name, s in servers.items():
        if s["kind"] == "ferry" and s["exit"] != 0:
            failed.append(f"{name}: exit status {s['exit']} on SIGTERM")
    return emit(run_dir, lines, summary, failed)


FWD_REFS = ("tinyproxy", "squid")
FWD_GOAL = {"tinyproxy": 3.0, "squid": 2.0}   # issue 5: ferry >= 3x tinyproxy and >= 2x squid
FWD_MEASURES = (
    ("forward-connect", "CONNECT, one tunnel per request", "tunnels"),
    ("forward-tunnel", "long-lived CONNECT tunnels, keep-alive GETs inside", "req"),
    ("forward-get", "absolute-form GETs, keep-alive", "req"),
)


def forward(run_dir):
    runs, meta, servers, excluded = load(run_dir)
    v = meta["versions"]
    s = meta.get("settings", {})
    lines = [
        "### Forward proxies: ferry -m forward, tinyproxy, squid",
        "",
        f"- date: {meta['date']}; machine: {meta['machine']}",
        f"- versions: ferry {v.get('ferry')}, tinyproxy {v.get('tinyproxy')}, squid {v.get('squid')}; "
        f"backend: nginx {v.get('nginx')}, 1 worker" if meta.get("backend", "nginx") == "nginx" else
        f"- versions: ferry {v.get('ferry')}, tinyproxy {v.get('tinyproxy')}, squid {v.get('squid')}; "
        f"backend: Apache {v.get('apache')}",
        f"- load: ferry-load -t1 -c{s.get('CONNS')} -d{s.get('DURATION')}s, {s.get('ROUNDS') or 1} interleaved "
        f"round(s), medians; ferry-load + backend on CPU {meta.get('load_cpu')}, proxy on CPU {meta.get('proxy_cpu')}"
        + (f"; FERRY_FWD_ARGS={s.get('FERRY_FWD_ARGS')}" if s.get("FERRY_FWD_ARGS") else ""),
        "",
    ]
    wanted = (s.get("TARGETS") or "").split()
    failed = []
    summary = {}
    allrows = {}
    for mode, title, unit in FWD_MEASURES:
        targets = order_targets(runs, mode, excluded, wanted)
        payloads = order_payloads(runs, mode)
        if not payloads:
            continue
        rows = summarize(runs, mode, targets, payloads, excluded, FWD_REFS)
        allrows[mode] = rows
        lines += [f"#### {title} ({mode.split('-', 1)[1]})", "",
                  f"| payload | target | {unit}/s | MB/s | p50 ms | p99 ms | errors | non-200 "
                  f"| proxy CPU µs/req | vs tinyproxy | vs squid | status |",
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        for p in payloads:
            for t in targets:
                row = rows.get((p, t))
                if row is None:
                    continue
                if "rps" not in row:
                    lines.append(f"| {p} | {label(t)} | " + "- | " * 10 + "FAILED |")
                    failed.append(f"{mode} {p} {t}: {row['why']}")
                    continue
                lines.append(
                    f"| {p} | {label(t)} | {row['rps']:.0f} | {row['mbps']:.1f} | {row['p50_ms']:.2f} | "
                    f"{row['p99_ms']:.2f} | {row['errors']} | {row['non2xx']} | {fmt(row['cpu_us'], '.1f')} | "
                    f"{ratio(row.get('vs_tinyproxy'))} | {ratio(row.get('vs_squid'))} | {row['status']} |")
                if row["status"] != "ok":
                    failed.append(f"{mode} {p} {t}: {row['why']}")
        lines.append("")
        summary.update({f"{mode} {p} {t}": r for (p, t), r in rows.items()})

    # The goals of issue 5, per measure and payload: paired ratios of ferry's rate
    # (and of the peers' CPU per request to ferry's).
    lines += ["#### ferry against the goals (≥ 3× tinyproxy, ≥ 2× squid)", "",
              "Rate ratios are paired per round (median of ferry/peer in the same round); MB/s ratios equal "
              "them for the same payload. 'CPU' is the peer's proxy CPU per request divided by ferry's "
              "(> 1: ferry does the same work with less CPU).", "",
              "| measure | payload | ferry /s | tinyproxy /s | squid /s | ferry / tinyproxy | ferry / squid "
              "| CPU tinyproxy / ferry | CPU squid / ferry | goals |",
              "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for mode, _title, unit in FWD_MEASURES:
        rows = allrows.get(mode, {})
        for p in order_payloads(runs, mode):
            f = rows.get((p, "ferry-fwd"))
            if not f or "rps" not in f:
                continue

            def rps(t):
                r = rows.get((p, t), {})
                return f"{r['rps']:.0f}" if "rps" in r else "-"

            def cpu(t):
                r = rows.get((p, t), {})
                return ratio(r["cpu_us"] / f["cpu_us"]) if r.get("cpu_us") and f.get("cpu_us") else "-"

            verdict = []
            for ref in FWD_REFS:
                x = f.get("vs_" + ref)
                if x is not None:
                    verdict.append(f"{ref} {'met' if x >= FWD_GOAL[ref] else 'MISSED'}")
            lines.append(f"| {mode.split('-', 1)[1]} ({unit}/s) | {p} | {rps('ferry-fwd')} | {rps('tinyproxy')} | "
                         f"{rps('squid')} | {ratio(f.get('vs_tinyproxy'))} | {ratio(f.get('vs_squid'))} | "
                         f"{cpu('tinyproxy')} | {cpu('squid')} | {', '.join(verdict) or '-'} |")
    if servers:
        lines += ["", "Peak RSS of each server over the whole run (VmHWM):", "",
                  "| server | peak RSS MiB | notes |", "|---|--:|---|"]
        for name, sv in servers.items():
            notes = []
            if sv["kind"] == "ferry":
                rep = sv["report"]
                if sv["exit"] != 0:
                    notes.append(f"exit status {sv['exit']} on SIGTERM")
                    failed.append(f"{name}: exit status {sv['exit']} on SIGTERM")
                if "bytes_backend_to_client" in rep:
                    b = int(rep.get("bytes_backend_to_client", 0))
                    sp = int(rep.get("bytes_spliced_backend_to_client", 0) or 0)
                    notes.append(f"{b / 1e9:.2f} GB backend->client, {100 * sp / b if b else 0:.0f}% spliced")
                hits, misses = int(rep.get("backend_pool_hits", 0) or 0), int(rep.get("backend_pool_misses", 0) or 0)
                for k in ("forward_tunnels", "http_requests"):
                    if k in rep:
                        notes.append(f"{k} {rep[k]}")
                if hits + misses:
                    notes.append(f"origin pool hits {100 * hits / (hits + misses):.2f}%")
                for k in ("http_responses_5xx", "forward_denied", "errors", "client_aborts"):
                    if k in rep:
                        notes.append(f"{k} {rep[k]}")
                if not rep:
                    notes.append("no statistics report on SIGTERM")
            lines.append(f"| {label(name)} | {kib_to_mib(sv['hwm_kib'])} | {', '.join(notes)} |")
    # ferry-load's own counts: reconnects (a proxy closing keep-alive connections
    # it did not announce as closing) are not errors but worth seeing.
    rec = {}
    for r in runs:
        if r.get("mode", "").startswith("forward-") and r["wrk"].get("reconnects"):
            k = (r["mode"].split("-", 1)[1], r["target"])
            rec[k] = rec.get(k, 0) + r["wrk"]["reconnects"]
    if rec:
        lines += ["", "Keep-alive connections the proxy closed between responses without announcing it "
                  "(ferry-load reopened them and sent the request again; summed over rounds): "
                  + "; ".join(f"{m} {label(t)} {n}" for (m, t), n in sorted(rec.items())) + "."]
    lines += disturbance_notes(run_dir, runs, "forward-")
    return emit(run_dir, lines, summary, failed)


def readme(out_dir):
    """A compact block for README.md from the last bench, conn and mem runs."""
    def last(mode):
        d = os.path.join(out_dir, f"last-{mode}")
        try:
            with open(os.path.join(d, "summary.json")) as f:
                summ = json.load(f)
            with open(os.path.join(d, "meta.json")) as f:
                return summ, json.load(f)
        except OSError:
            return None, None
    summ, meta = last("bench")
    if not summ:
        sys.exit("report.py: no bench/out/last-bench run yet (make bench)")
    v = meta["versions"]
    st = meta.get("settings", {})
    lines = [f"Measured {meta['date']} on {meta['machine']}; ferry {v.get('ferry')}, HAProxy {v.get('haproxy')}, "
             f"nginx {v.get('nginx')}; backend {meta.get('backend')} with 1 worker; wrk -c{st.get('CONNS')} "
             f"-d{st.get('DURATION')}s keep-alive, median of {st.get('ROUNDS')} interleaved rounds; every proxy "
             f"single-threaded and pinned alone on one core. Method and full tables: docs/BENCHMARKS.md.", "",
             "| payload | ferry (splice auto) | ferry (splice off) | HAProxy mode tcp | nginx stream "
             "| ferry auto / HAProxy | ferry auto / nginx |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    payloads = []
    for k in summ:
        p = k.split(" ", 1)[0]
        if p not in payloads:
            payloads.append(p)

    def cell(p, t):
        r = summ.get(f"{p} {t}")
        if not r or "rps" not in r:
            return "-"
        if r.get("status") != "ok":
            return "FAILED"
        return f"{r['rps']:,.0f} req/s, {r['cpu_us']:.1f} µs CPU/req"

    def rat(p, t, ref):
        r = summ.get(f"{p} {t}", {})
        x = r.get("vs_" + ref)
        mine, other = r.get("cpu_us"), summ.get(f"{p} {ref}", {}).get("cpu_us")
        if x is None:
            return "-"
        cpu = f", CPU ×{mine / other:.2f}" if mine and other else ""
        return f"×{x:.2f}{cpu}"
    for p in payloads:
        if not any(f"{p} {t}" in summ for t in ("ferry-auto", "ferry-off", "haproxy", "nginx")):
            continue
        lines.append(f"| {p} | {cell(p, 'ferry-auto')} | {cell(p, 'ferry-off')} | {cell(p, 'haproxy')} | "
                     f"{cell(p, 'nginx')} | {rat(p, 'ferry-auto', 'haproxy')} | {rat(p, 'ferry-auto', 'nginx')} |")
    def busy_line(t, ref, what):
        parts = [f"{p} {cell(p, t)} ({rat(p, t, ref)})" for p in payloads
                 if f"{p} {t}" in summ and "rps" in summ[f"{p} {t}"]]
        if parts:
            lines.extend(["", f"{what} (`{label(t)}`), against {REF_NAME[ref]}: " + "; ".join(parts) + "."])
    busy_line("ferry-busy", "haproxy", "Busy-polling")
    hts = [t for t in ("ferry-http-auto", "ferry-http-10k", "haproxy-http", "nginx-http")]
    hp = [p for p in payloads if any(f"{p} {t}" in summ for t in hts)]
    if hp:
        def reu(p, t):
            r = summ.get(f"{p} {t}", {})
            return "-" if r.get("reuse") is None else f"{100 * r['reuse']:.2f}%"
        lines += ["", "HTTP mode (`-m http`, ferry's defaults: `--pool-max-requests 100`; '10k': "
                  "`--pool-max-requests 10000`) against HAProxy `mode http` and nginx `proxy_pass` with "
                  "`keepalive 32`; backend connection reuse = 1 - backend connections / requests:", "",
                  "| payload | ferry http (splice auto) | HAProxy mode http | nginx proxy_pass "
                  "| ferry / HAProxy | ferry / nginx | ferry 10k / HAProxy | ferry 10k / nginx "
                  "| reuse: ferry, ferry 10k, HAProxy, nginx |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
        for p in hp:
            lines.append(f"| {p} | {cell(p, 'ferry-http-auto')} | {cell(p, 'haproxy-http')} | "
                         f"{cell(p, 'nginx-http')} | {rat(p, 'ferry-http-auto', 'haproxy-http')} | "
                         f"{rat(p, 'ferry-http-auto', 'nginx-http')} | {rat(p, 'ferry-http-10k', 'haproxy-http')} | "
                         f"{rat(p, 'ferry-http-10k', 'nginx-http')} | "
                         + ", ".join(reu(p, t) for t in hts) + " |")
        busy_line("ferry-http-busy", "haproxy-http", "Busy-polling in HTTP mode")
    csumm, cmeta = last("conn")
    if csumm:
        parts = []
        for t in ("ferry-off", "haproxy", "nginx"):
            r = next((v for k, v in csumm.items() if k.endswith(" " + t) and "rps" in v), None)
            if r:
                vs = f" (×{r['vs_haproxy']:.2f} HAProxy)" if t != "haproxy" and r.get("vs_haproxy") else ""
                parts.append(f"{label(t)} {r['rps']:,.0f}{vs}")
        lines += ["", "New connections per second (Connection: close, 1 KiB): " + ", ".join(parts) + "."]
    msumm, mmeta = last("mem")
    if msumm:
        parts = []
        for t, r in msumm.items():
            if r.get("bytes_per_conn") is not None:
                parts.append(f"{label(t)} {r['bytes_per_conn']:,.0f} B per idle connection "
                             f"(peak {r['hwm_load_kib'] / 1024:.1f} MiB under the 1 MiB load)")
        n = mmeta.get("settings", {}).get("IDLE_CONNS") or "9000"
        lines += ["", f"Memory with {n} idle connections (RSS growth / connections): " + "; ".join(parts) + "."]
    print("\n".join(lines))
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "meta":
        write_meta(sys.argv[2], sys.argv[3])
        return 0
    if cmd == "readme":
        return readme(sys.argv[2])
    run_dir = sys.argv[2]
    if cmd in ("bench", "conn"):
        return throughput(run_dir, cmd)
    if cmd == "all":
        return matrix(run_dir)
    if cmd == "mem":
        return mem(run_dir)
    if cmd == "forward":
        return forward(run_dir)
    sys.exit(f"report.py: unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
