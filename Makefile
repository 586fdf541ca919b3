# The README's test command: every test of every module, with the race
# detector, and the JavaScript helper's test against the Go side's close-frame
# vectors. Node test clients are installed first when npm is present; tests
# whose tools are missing skip and say how to get them (with
# WSREDIRECT_REQUIRE_TOOLS set, as in CI, they fail instead).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: test bench fuzz
test:
	@if command -v npm >/dev/null 2>&1; then \
		echo "== npm ci (e2e/node)"; npm ci --prefix e2e/node --no-audit --no-fund --loglevel=error; \
	fi
	@for m in . bench etcd prom cmd/wsredirect-demo examples/chat; do \
		echo "== $$m: go vet"; (cd $$m && go vet ./...); \
		echo "== $$m: go test -race"; (cd $$m && go test -race -count=1 ./...); \
	done
	@# At fleet scale without the race detector, whose goroutine limit the
	@# -race run above keeps these tests under.
	@echo "== .: go test (live drain of 5,000 connections, no -race)"; go test -count=1 -run 'TestLiveDrainAtScale' .
	@# js/wsredirect.js's parsers against wire/testdata/vectors.json.
	@if command -v node >/dev/null 2>&1; then \
		echo "== js: node --test"; node --test --test-reporter=spec js/*.test.mjs; \
	else \
		echo "== js: SKIP: the JavaScript helper's test needs Node.js 20+: apt-get install nodejs (or https://nodejs.org)"; \
		if [ -n "$$WSREDIRECT_REQUIRE_TOOLS" ]; then exit 1; fi; \
	fi
	@echo "== e2e: go vet"; cd e2e && go vet ./...
	@# Each end-to-end test is listed, so a log shows the browsers really ran,
	@# with what a skipped or failed test logged (why) under it.
	@echo "== e2e: go test -race (Chromium, Node ws, RFC 8441)"; \
		cd e2e && go test -race -count=1 -v ./... | awk -f results.awk

# The README's benchmark tables.
bench:
	go test -run '^$$' -bench . -benchmem -count 1 . ./client ./ring
	cd bench && go test -run '^$$' -bench . -benchmem -count 1 .

# Fuzzing beyond the seed corpus make test runs. The targets are found with
# go test -list, so a fuzz test that moves to another package is not skipped.
# By default each target gets a budget of executions (go test -fuzztime Nx),
# sized so every target runs for roughly 5-10 s on two cores: a count cannot
# race the fuzzing coordinator's own deadline under CPU contention, as a
# duration can before Go 1.27 (golang/go#75804: "context deadline exceeded"
# with no crasher). FUZZTIME=5m (any go test -fuzztime value) gives every
# target that budget instead, for long local runs. A crasher fails the run,
# after every target has had its turn.
FUZZTIME ?=
fuzz:
	@failed=0; go test -list '^Fuzz' ./... | \
		awk '/^Fuzz/ { f[++n] = $$1; next } /^ok/ { for (i = 1; i <= n; i++) print $$2, f[i]; n = 0 }' | \
		{ while read -r pkg f; do \
			budget=$(FUZZTIME); \
			if [ -z "$$budget" ]; then case $$f in \
				FuzzCodec) budget=300000x ;; \
				*) budget=100000x ;; \
			esac; fi; \
			echo "== $$pkg $$f ($$budget)"; \
			go test -run '^$$' -fuzz "^$$f\$$" -fuzztime "$$budget" $$pkg </dev/null || failed=1; \
		done; exit $$failed; }

# Issue 13's case for redirecting, measured against a proxy: builds
# bench/perf, installs Debian's nginx-light and wrk when missing (as root;
# otherwise their rows are skipped, saying how to get them), runs five
# bounded scenarios on 127.0.0.1 only (under ten minutes on two cores),
# prints one table and writes it into docs/benchmarks.md.
# PERF_FLAGS=-quick checks the harness in under a minute; PERF_DOC= writes
# no file.
PERF_FLAGS ?=
PERF_DOC ?= docs/benchmarks.md
.PHONY: perf
perf:
	@bash bench/perf/tools.sh
	@bin=$$(mktemp -d); trap 'rm -rf "$$bin"' EXIT; \
		(cd bench && go build -o "$$bin/perf" ./perf) && \
		"$$bin/perf" $(if $(PERF_DOC),-doc $(PERF_DOC)) $(PERF_FLAGS)
