package prom

// Cached returns how many label sets c has resolved counters for.
func Cached(c *Collector) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.series)
}

// FastLen returns the size of c's fast map.
func FastLen(c *Collector) int { return len(*c.fast.Load()) }
