//go:build !race

package wsredirect

const raceEnabled = false
