package kafka

import (
	"context"
	"fmt"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// topicCreates gathers the topic creations asked for at once into one CreateTopics request.
// kafka-go's transport refreshes the metadata of every topic of the cluster after each
// CreateTopics and waits for the new topics to show in it: a thousand pipelines opening (a few
// at a time), each creating its data topic, made a thousand refreshes of a growing cluster,
// about a twentieth of the CPU of their whole first sync (BENCHMARKS.md "Many pipelines").
// Creations that arrive while a request is out go together in the next one.
type topicCreates struct {
	// send creates the topics in one request and returns each one's error (nil or missing: made).
	send func(ctx context.Context, topics []kafkago.TopicConfig) (map[string]error, error)
	// timeout bounds each request: it runs on behalf of every caller it carries, so none of
	// their contexts may cancel it (a caller whose context ends stops waiting, that is all).
	timeout time.Duration

	mu      sync.Mutex
	pending []*topicCreate
	byName  map[string]*topicCreate // the pending creations by topic name
	sending bool                    // a goroutine is sending; it takes what is pending when done
}

// topicCreate is one topic to create and, once done is closed, its outcome.
type topicCreate struct {
	cfg  kafkago.TopicConfig
	done chan struct{}
	err  error
}

// create asks for tc and waits for its outcome or the end of ctx. Two callers asking for the
// same topic in one round share one entry, the first one's configuration: the second would
// have found the topic made by the first anyway.
func (t *topicCreates) create(ctx context.Context, tc kafkago.TopicConfig) error {
	t.mu.Lock()
	op, ok := t.byName[tc.Topic]
	if !ok {
		op = &topicCreate{cfg: tc, done: make(chan struct{})}
		t.pending = append(t.pending, op)
		if t.byName == nil {
			t.byName = map[string]*topicCreate{}
		}
		t.byName[tc.Topic] = op
	}
	if !t.sending {
		t.sending = true
		go t.run(context.WithoutCancel(ctx))
	}
	t.mu.Unlock()
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run sends what is pending, one request at a time, until nothing is.
func (t *topicCreates) run(ctx context.Context) {
	for {
		t.mu.Lock()
		ops := t.pending
		t.pending, t.byName = nil, nil
		if len(ops) == 0 {
			t.sending = false
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		topics := make([]kafkago.TopicConfig, len(ops))
		for i, op := range ops {
			topics[i] = op.cfg
		}
		rctx, cancel := context.WithTimeout(ctx, t.timeout)
		errs, err := t.send(rctx, topics)
		cancel()
		for _, op := range ops {
			op.err = err
			if err == nil {
				op.err = errs[op.cfg.Topic]
			}
			if op.err != nil && len(ops) > 1 {
				op.err = fmt.Errorf("%w (sent with %d other topics)", op.err, len(ops)-1)
			}
			close(op.done)
		}
	}
}
