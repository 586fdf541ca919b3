# The README's test command: every test of every module, with the race
# detector. Node test clients are installed first when npm is present;
# tests whose tools are missing skip and say how to get them.
MODULES := . bench e2e

.PHONY: test bench
test:
	@if command -v npm >/dev/null 2>&1; then \
		echo "== npm ci (e2e/node)"; npm ci --prefix e2e/node --no-audit --no-fund --loglevel=error; \
	fi
	@set -e; for m in $(MODULES); do \
		echo "== $$m: go vet"; (cd $$m && go vet ./...); \
		echo "== $$m: go test -race"; (cd $$m && go test -race -count=1 ./...); \
	done

# The README's benchmark tables.
bench:
	go test -run '^$$' -bench . -benchmem -count 1 . ./client
	cd bench && go test -run '^$$' -bench . -benchmem -count 1 .
