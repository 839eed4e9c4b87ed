package sink_test

import (
	"sync"
	"testing"

	"github.com/keysetsync/keysetsync/internal/sinktest"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
)

// memTarget is a Mem whose policy acks at once, but for the next batch after Fail (failed)
// or Hold (held until released).
type memTarget struct {
	mu   sync.Mutex
	next func(*sink.MemBatch) // for the next batch only
}

func (m *memTarget) policy(b *sink.MemBatch) {
	m.mu.Lock()
	next := m.next
	m.next = nil
	m.mu.Unlock()
	if next == nil {
		b.Ack()
		return
	}
	next(b)
}

func (m *memTarget) arm(f func(*sink.MemBatch)) {
	m.mu.Lock()
	m.next = f
	m.mu.Unlock()
}

func TestMemConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Target {
		m := &memTarget{}
		mem := sink.NewMem(m.policy)
		return sinktest.Target{
			Sink:   mem,
			Topics: [2]string{"a", "b"},
			Read:   func(_ *testing.T, topic string) []sink.Message { return mem.Written(topic) },
			Fail: func(*testing.T) []sink.Message {
				m.arm(func(b *sink.MemBatch) { b.Fail(retry.Permanent("refused by the test")) })
				return []sink.Message{{Topic: "a", Key: []byte("k"), Value: []byte("v")}}
			},
			Hold: func(t *testing.T) *sinktest.Hold {
				held, release := make(chan struct{}), make(chan struct{})
				var once sync.Once
				m.arm(func(b *sink.MemBatch) {
					close(held)
					go func() {
						<-release
						b.Ack()
					}()
				})
				return &sinktest.Hold{Held: held, Release: func() { once.Do(func() { close(release) }) }}
			},
		}
	})
}
