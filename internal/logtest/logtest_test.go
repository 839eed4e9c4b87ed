package logtest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKeys(t *testing.T) {
	line := `time=2026-01-01T00:00:00Z level=INFO msg="a b=c" pipeline=p pipeline=p err="x \"y=z\" w" n=1`
	assert.Equal(t, []string{"time", "level", "msg", "pipeline", "pipeline", "err", "n"}, Keys(line))
}
