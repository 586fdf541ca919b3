# The README's test command: every test of every module, with the race
# detector. Node test clients are installed first when npm is present;
# tests whose tools are missing skip and say how to get them.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: test bench fuzz
test:
	@if command -v npm >/dev/null 2>&1; then \
		echo "== npm ci (e2e/node)"; npm ci --prefix e2e/node --no-audit --no-fund --loglevel=error; \
	fi
	@for m in . bench; do \
		echo "== $$m: go vet"; (cd $$m && go vet ./...); \
		echo "== $$m: go test -race"; (cd $$m && go test -race -count=1 ./...); \
	done
	@echo "== e2e: go vet"; cd e2e && go vet ./...
	@# Each end-to-end test is listed, so a log shows the browsers really ran.
	@echo "== e2e: go test -race (Chromium, Node ws, RFC 8441)"; \
		cd e2e && go test -race -count=1 -v ./... | grep -E '^ *--- (PASS|FAIL|SKIP)|^(ok|FAIL|panic)' 

# The README's benchmark tables.
bench:
	go test -run '^$$' -bench . -benchmem -count 1 . ./client
	cd bench && go test -run '^$$' -bench . -benchmem -count 1 .

# Longer fuzzing than the seed corpus make test runs: FUZZTIME per target.
FUZZTIME ?= 30s
fuzz:
	@for f in FuzzListHasToken FuzzCloseCodec FuzzQueryValue FuzzPatterns; do \
		echo "== $$f ($(FUZZTIME))"; go test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) . ; \
	done
