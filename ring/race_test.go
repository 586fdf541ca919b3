//go:build race

package ring

// raceEnabled is set when tests run under the race detector, which slows
// ring builds about fivefold: property tests take fewer steps then.
const raceEnabled = true
