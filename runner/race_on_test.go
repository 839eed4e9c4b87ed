//go:build race

package runner_test

// slowdown scales the time bounds of the scale tests: the race detector makes every pass
// several times slower, and with 500 pipelines the queue for slots with them.
const slowdown = 5
