package prom_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/wsredirect/wsredirect/internal/testtool"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// scrape GETs a /metrics endpoint as Prometheus would and returns the text
// and its series: "name{label=\"value\",…}" (labels sorted, histograms as
// their _bucket, _sum and _count series) to value.
func scrape(t *testing.T, url string) (text string, series map[string]float64) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	require.NoError(t, err, "scrape:\n%s", b)
	return string(b), flatten(fams)
}

func flatten(fams map[string]*dto.MetricFamily) map[string]float64 {
	series := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(suffix string, extra ...string) string {
				ls := append(slices.Clone(labels), extra...)
				slices.Sort(ls)
				if len(ls) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				series[key("")] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				series[key("")] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				h := m.GetHistogram()
				series[key("_count")] = float64(h.GetSampleCount())
				series[key("_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					series[key("_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			default:
				series[key("")] = m.GetUntyped().GetValue()
			}
		}
	}
	return series
}

// only returns the series whose name starts with prefix.
func only(series map[string]float64, prefix string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range series {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// promtoolBin returns Debian's promtool, else the first on PATH.
func promtoolBin(t *testing.T) string {
	t.Helper()
	const bin = "/usr/bin/promtool"
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	testtool.Missing(t, "checking the exposition needs promtool: apt-get install prometheus (no "+bin+", none on PATH)")
	return ""
}

// promtoolCheck lints an exposition with promtool check metrics, which
// fails on a malformed exposition and on what Prometheus' naming
// conventions advise against (a counter without _total, a unit that is not
// a base unit, a missing help string, …).
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	cmd := exec.Command(promtoolBin(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s\non:\n%s", out, text)
	t.Logf("promtool check metrics: ok (%d bytes of exposition)%s", len(text), strings.TrimRight("\n"+string(out), "\n"))
}
