//go:build !race

package runner_test

// slowdown scales the time bounds of the scale tests (see race_on_test.go).
const slowdown = 1
