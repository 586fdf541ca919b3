package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rounds holds one figure per round. A scenario's figure is their median,
// its spread their min and max.
type rounds []float64

func (r rounds) median() float64 {
	if len(r) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(r))
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func (r rounds) min() float64 { return slices.Min(r) }
func (r rounds) max() float64 { return slices.Max(r) }

// ratio is a/b round by round: the paired figures of two variants measured
// in the same round.
func ratio(a, b rounds) rounds {
	out := make(rounds, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] / b[i]
	}
	return out
}

// percentile returns the p-th percentile (0 < p ≤ 100) of samples, nearest
// rank.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// fmtCount writes n with thousands separators: 52,310.
func fmtCount(n float64) string {
	s := strconv.FormatInt(int64(math.Round(n)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtSec writes a duration given in seconds with a unit that suits it:
// 8.4 µs, 112 µs, 1.32 ms, 4.1 s.
func fmtSec(s float64) string {
	switch us := s * 1e6; {
	case us < 10:
		return fmt.Sprintf("%.1f µs", us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2f ms", us/1e3)
	}
	return fmt.Sprintf("%.2f s", s)
}

// fmtNs writes nanoseconds: 61 ns, 1.2 µs.
func fmtNs(ns float64) string {
	if ns < 1000 {
		return fmt.Sprintf("%.0f ns", ns)
	}
	return fmtSec(ns / 1e9)
}

// fmtRatio writes 1.85×.
func fmtRatio(x float64) string { return fmt.Sprintf("%.2f×", x) }

// spreadOf writes the min–max of r with f.
func spreadOf(r rounds, f func(float64) string) string {
	if len(r) < 2 {
		return "—"
	}
	return f(r.min()) + " – " + f(r.max())
}

// ratioCell writes the median of per-round ratios and their range.
func ratioCell(r rounds) string {
	if len(r) < 2 {
		return fmtRatio(r.median())
	}
	return fmt.Sprintf("%s (%s–%s)", fmtRatio(r.median()), strings.TrimSuffix(fmtRatio(r.min()), "×"), fmtRatio(r.max()))
}

// metCell says whether a target is met.
func metCell(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
