# bench/bench.mk: benchmark targets for ferry.
#
# Included by the top-level Makefile (`include bench/bench.mk`) or used alone:
#   make -f bench/bench.mk bench
# Run from the repository root.  Included, `make bench` builds ./proxy first;
# every bench target runs bench/setup.sh first (as root; idempotent, under a
# second when everything is there), which installs nginx, HAProxy, wrk,
# siege, ab, Apache, tinyproxy and squid and writes the payloads.
#
# Settings come from the environment or the make command line, e.g.
#   make bench CONNS=100 DURATION=10 ROUNDS=5 BACKEND=apache
# (see docs/BENCHMARKS.md for all of them).

BENCH_RUN = bash bench/run.sh
# Included from the top-level Makefile: build ./proxy first through its
# `proxy` target.  Alone (-f bench/bench.mk): use the ./proxy that is there.
# `make bench BENCH_DEPS=` skips the build.
ifneq ($(lastword $(filter-out bench/bench.mk,$(MAKEFILE_LIST))),)
BENCH_DEPS ?= proxy
FWD_DEPS ?= proxy ferry-load
endif
CARGO ?= cargo
# Pass the settings given on the make command line to the scripts.
BENCH_VARS = CONNS DURATION ROUNDS PAYLOADS TARGETS BACKEND PROXY FERRY_ARGS \
             LOAD_CPU PROXY_CPU IDLE_CONNS SIEGE_REPS CONN_PAYLOADS \
             HTTP_PAYLOADS FERRY_HTTP_ARGS DISTURBED_PCT RETRIES QUIET_WAIT \
             FERRY_LOAD FERRY_FWD_ARGS FWD_CONNECT_PAYLOADS FWD_TUNNEL_PAYLOADS FWD_GET_PAYLOADS
BENCH_ENV = $(strip $(foreach v,$(BENCH_VARS),$(if $(filter command line,$(origin $(v))),$(v)='$($(v))')))

.PHONY: bench bench-all bench-mem bench-conn bench-forward bench-setup bench-clean bench-readme ferry-load

bench-setup:
	bash bench/setup.sh

bench: bench-setup $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) bench

bench-all: bench-setup $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) all

bench-mem: bench-setup $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) mem

bench-conn: bench-setup $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) conn

# Forward proxies: ferry -m forward, tinyproxy and squid, driven by ferry-load
# (CONNECT per request, long-lived tunnels, absolute-form GETs).  Not part of
# `make bench`: it takes about 5 minutes of its own (see docs/BENCHMARKS.md).
bench-forward: bench-setup $(FWD_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) forward

# The load generator of bench-forward (src/bin/ferry-load.rs), copied to ./ferry-load.
ferry-load:
	$(CARGO) build --release --bin ferry-load
	cp target/release/ferry-load ./ferry-load.new && mv -f ./ferry-load.new ./ferry-load

# The compact table for README.md, from the last bench, bench-conn and bench-mem runs.
bench-readme:
	python3 bench/report.py readme bench/out

bench-clean:
	rm -rf bench/out/runs bench/out/last-*
