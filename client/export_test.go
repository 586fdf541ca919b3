package client

import (
	"context"
	"time"
)

// SetSleep makes d wait with sleep instead of a timer, so tests of retry
// delays do not wait.
func SetSleep(d *Dialer, sleep func(ctx context.Context, d time.Duration) error) { d.sleep = sleep }

// SetClock makes d's redirect memory, and the cue budget of the Conns it
// connects, read the time from now, so tests of expiry do not wait.
func SetClock(d *Dialer, now func() time.Time) {
	d.now = now
	if m := d.memory(); m != nil {
		m.mu.Lock()
		m.now = now
		m.mu.Unlock()
	}
}

// SetMaxRemembered bounds d's redirect memory to n URLs instead of
// MaxRemembered.
func SetMaxRemembered(d *Dialer, n int) {
	m := d.memory()
	m.mu.Lock()
	m.max = n
	m.mu.Unlock()
}

// Remembered returns the target d remembers for urlStr, or "".
func Remembered(d *Dialer, urlStr string) string {
	m := d.memory()
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[urlStr]; ok {
		return el.Value.(*recalled).url
	}
	return ""
}

// SetLeaveAnswer sets how long a close the server owes may take (a stub's,
// the answer to a Conn's close on a cue), for the rest of the test.
func SetLeaveAnswer(t interface{ Cleanup(func()) }, d time.Duration) {
	old := leaveAnswer
	leaveAnswer = d
	t.Cleanup(func() { leaveAnswer = old })
}

// CueBudget is how long cues are ordinary messages once one proved false.
const CueBudget = cueBudget
