# ferry: build, run, test. `make run` and `make test` are all a user needs.
CARGO ?= cargo
export RUSTFLAGS := -C target-cpu=native
RELEASE_BIN := target/release/proxy

.PHONY: all proxy run test unit e2e debug info fmt lint clean

all: proxy

proxy:
	$(CARGO) build --release
	cp $(RELEASE_BIN) ./proxy.new && mv -f ./proxy.new ./proxy

run: proxy
	./proxy

# The whole suite: unit tests, integration tests against the real binary, end-to-end with real programs.
test: proxy
	$(CARGO) test --release
	$(MAKE) e2e

e2e: proxy
	bash tests/e2e/run.sh ./proxy
	bash tests/e2e/http.sh ./proxy
	bash tests/e2e/forward.sh ./proxy
	bash tests/e2e/admin.sh ./proxy

# Debug build with debug assertions, and the tests run with them.
debug:
	$(CARGO) build
	$(CARGO) test

info: proxy
	./proxy --info

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -f ./proxy

-include bench/bench.mk
