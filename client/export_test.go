package client

import (
	"context"
	"time"
)

// SetSleep makes d wait with sleep instead of a timer, so tests of retry
// delays do not wait.
func SetSleep(d *Dialer, sleep func(ctx context.Context, d time.Duration) error) { d.sleep = sleep }

// SetClock makes d's redirect memory read the time from now, so tests of
// expiry do not wait.
func SetClock(d *Dialer, now func() time.Time) {
	m := d.memory()
	m.mu.Lock()
	m.now = now
	m.mu.Unlock()
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

// SetLeaveAnswer sets how long a connection closed on an announcement may
// take to end, for the rest of the test.
func SetLeaveAnswer(t interface{ Cleanup(func()) }, d time.Duration) {
	old := leaveAnswer
	leaveAnswer = d
	t.Cleanup(func() { leaveAnswer = old })
}
