package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsredirect/wsredirect/internal/testtool"
)

// TestMain lets the test binary be the servers the harness starts, as the
// perf binary is.
func TestMain(m *testing.M) {
	if spec := os.Getenv(serveEnv); spec != "" {
		os.Exit(serveMain(spec))
	}
	os.Exit(m.Run())
}

// TestSmoke runs every scenario once, tiny and brief, with NGINX and wrk:
// the harness starts, measures, checks and stops everything. It skips
// without them, unless WSREDIRECT_REQUIRE_TOOLS is set (as in CI).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers, NGINX and wrk")
	}
	cfg := quickConfig()
	cfg.rounds, cfg.warmup, cfg.pin = 1, 0, false
	h := newHarness(cfg)
	h.log = testLog{t}
	defer h.cleanup()
	for tool, path := range map[string]string{"nginx-light": h.nginxPath, "wrk": h.wrkPath} {
		if path == "" {
			testtool.Missing(t, "make perf's peers are missing: apt-get install -y nginx-light wrk ("+tool+")")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := h.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	table := rep.markdown()
	t.Log("\n" + table)
	for _, want := range []string{"1 router capacity", "NGINX return 307", "2 connect", "through NGINX proxy",
		"3 after the redirect", "4 live drain", "5 scale", "1,024 members", "Track's registry entry"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table has no %q", want)
		}
	}
	if strings.Contains(table, "skipped") {
		t.Errorf("a row was skipped with every tool present")
	}
}

// TestWriteDoc checks the table replaces only its own section of
// docs/benchmarks.md, and that a missing file is created with the
// micro-benchmarks' section above it.
func TestWriteDoc(t *testing.T) {
	rep := &report{cfg: config{rounds: 5}, machine: "test machine", placement: "placement: test", loadBefore: "0.00 0.00 0.00", loadAfter: "0.00 0.00 0.00", took: time.Minute,
		rows: []row{{scenario: "1 s", variant: "v", figure: "42 req/s", spread: "—", ratio: "1.00×", target: "—", met: "—"}}}
	dir := t.TempDir()

	fresh := filepath.Join(dir, "fresh.md")
	if err := writeDoc(fresh, rep); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(fresh)
	if s := string(b); !strings.HasPrefix(s, docTitle+"\n"+microHead+"\n\n"+microStart+"\n") || !strings.Contains(s, perfHead) || !strings.Contains(s, "42 req/s") {
		t.Errorf("new file:\n%s", s)
	}

	kept := filepath.Join(dir, "kept.md")
	os.WriteFile(kept, []byte("# Benchmarks\n\n"+microHead+"\n\nmicro table\n\n"+perfHead+"\n\nold table\n\n## Later\n\nkept too\n"), 0o644)
	rep.rows[0].figure = "43 req/s"
	if err := writeDoc(kept, rep); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(kept)
	s := string(b)
	for _, want := range []string{"micro table", "43 req/s", "## Later\n\nkept too\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	}
	if strings.Contains(s, "old table") || strings.Count(s, perfHead) != 1 {
		t.Errorf("old section not replaced:\n%s", s)
	}
}

// testLog sends the harness's progress to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
