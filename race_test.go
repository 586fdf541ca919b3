//go:build race

package wsredirect

// raceEnabled: the race detector allows 8128 live goroutines, so tests at
// fleet scale shrink under it.
const raceEnabled = true
