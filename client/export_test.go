package client

import (
	"context"
	"time"
)

// SetSleep makes d wait with sleep instead of a timer, so tests of retry
// delays do not wait.
func SetSleep(d *Dialer, sleep func(ctx context.Context, d time.Duration) error) { d.sleep = sleep }
