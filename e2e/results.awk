# results.awk condenses `go test -v` output for make test: every test's
# PASS/FAIL/SKIP line (so a log shows the browsers really ran), followed,
# for a skip or a failure, by what that test logged (why it skipped, what
# failed), indented under it as plain `go test` would; the package's
# ok/FAIL lines; and everything from a panic on. A passing test's chatter
# is dropped. In -v output a test's log lines come before its result line,
# after a "=== RUN|CONT|NAME|PAUSE <test>" line naming whose they are, so
# they are held per test until its result is known.
#
#	go test -v ./... | awk -f results.awk

function flush(name, indent,    n, i) {
	n = count[name]
	for (i = 1; i <= n; i++) print indent held[name, i]
	drop(name)
}

function drop(name,    n, i) {
	n = count[name]
	for (i = 1; i <= n; i++) delete held[name, i]
	delete count[name]
}

# orphans shows the output of tests that never reported a result: the test
# binary exited or crashed while they ran.
function orphans(    name, names, n, i) {
	for (name in count) names[++n] = name
	for (i = 1; i <= n; i++) {
		print "--- (no result): " names[i]
		flush(names[i], "")
	}
}

panicked { print; next }

/^panic: / { panicked = 1; print; next }

/^=== (RUN|CONT|NAME|PAUSE)/ {
	current = $3
	if ($2 == "RUN") ran[current] = 1
	next
}

# A result line of this run: a test it ran, indented no deeper than the
# test's depth (a subtest name may hold a "/" of its own).
/^ *--- (PASS|FAIL|SKIP): / && ($3 in ran) && match($0, /^ */) && RLENGTH <= 4 * (split($3, parts, "/") - 1) {
	print
	if ($2 == "PASS:") drop($3)
	else flush($3, substr($0, 1, RLENGTH))
	next
}

# A result line deeper than that is in a test's log, such as the output of
# a child go test process (TestExtendedConnect): listed too, and kept with
# the rest of that log.
/^ *--- (PASS|FAIL|SKIP): / { print }

/^PASS$/ { next }

/^(ok|FAIL|\?)([ \t]|$)/ { orphans(); print; next }

current != "" { held[current, ++count[current]] = $0 }

END { orphans() }
