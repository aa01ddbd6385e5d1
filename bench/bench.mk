# bench/bench.mk: benchmark targets for ferry.
#
# Included by the top-level Makefile (`include bench/bench.mk`) or used alone:
#   make -f bench/bench.mk bench
# Run from the repository root.  Included, `make bench` builds ./proxy first;
# bench/setup.sh (as root) installs nginx, HAProxy, wrk, siege, ab, Apache.
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
endif
# Pass the settings given on the make command line to the scripts.
BENCH_VARS = CONNS DURATION ROUNDS PAYLOADS TARGETS BACKEND PROXY FERRY_ARGS \
             LOAD_CPU PROXY_CPU IDLE_CONNS SIEGE_REPS CONN_PAYLOADS \
             HTTP_PAYLOADS FERRY_HTTP_ARGS DISTURBED_PCT RETRIES QUIET_WAIT
BENCH_ENV = $(strip $(foreach v,$(BENCH_VARS),$(if $(filter command line,$(origin $(v))),$(v)='$($(v))')))

.PHONY: bench bench-all bench-mem bench-conn bench-setup bench-clean bench-readme

bench-setup:
	bash bench/setup.sh

bench: $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) bench

bench-all: $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) all

bench-mem: $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) mem

bench-conn: $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_RUN) conn

# The compact table for README.md, from the last bench, bench-conn and bench-mem runs.
bench-readme:
	python3 bench/report.py readme bench/out

bench-clean:
	rm -rf bench/out/runs bench/out/last-*
