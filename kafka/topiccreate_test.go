package kafka

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// fakeCreates records the requests of a topicCreates and holds the first until released.
type fakeCreates struct {
	mu       sync.Mutex
	requests [][]string
	first    chan struct{} // closed: the first request may answer
	fail     map[string]error
}

func (f *fakeCreates) send(ctx context.Context, topics []kafkago.TopicConfig) (map[string]error, error) {
	f.mu.Lock()
	names := make([]string, len(topics))
	for i, tc := range topics {
		names[i] = tc.Topic
	}
	f.requests = append(f.requests, names)
	n := len(f.requests)
	f.mu.Unlock()
	if n == 1 {
		select {
		case <-f.first:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	errs := map[string]error{}
	for _, name := range names {
		if err := f.fail[name]; err != nil {
			errs[name] = err
		}
	}
	return errs, nil
}

func (t *topicCreates) pendingLen() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// Creations asked for while a CreateTopics request is out go out together in the next one:
// kafka-go refreshes the whole cluster's metadata after each request, and a thousand pipelines
// opening each made one. Each caller gets its own topic's outcome; two callers of one topic
// share its entry; a caller whose context ends stops waiting without failing the others.
func TestTopicCreatesGathersConcurrentCreations(t *testing.T) {
	f := &fakeCreates{first: make(chan struct{}), fail: map[string]error{"bad": kafkago.InvalidReplicationFactor}}
	tc := &topicCreates{send: f.send, timeout: time.Minute}
	ctx := context.Background()

	results := make(chan error, 1)
	go func() { results <- tc.create(ctx, kafkago.TopicConfig{Topic: "t0"}) }()
	for {
		f.mu.Lock()
		n := len(f.requests)
		f.mu.Unlock()
		if n == 1 {
			break
		}
		runtime.Gosched()
	}

	// While t0's request is out: eight more, one of them twice, one that fails, and one whose
	// caller gives up.
	names := []string{"t1", "t2", "t3", "t4", "t5", "t5", "bad"}
	errs := make([]chan error, len(names))
	for i, name := range names {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- tc.create(ctx, kafkago.TopicConfig{Topic: name}) }()
	}
	gone, giveUp := context.WithCancel(ctx)
	goneErr := make(chan error, 1)
	go func() { goneErr <- tc.create(gone, kafkago.TopicConfig{Topic: "gone"}) }()
	// t5 is asked for twice but queued once: 7 entries (t1..t5, bad, gone).
	for tc.pendingLen() < 7 {
		runtime.Gosched()
	}
	giveUp()
	require.ErrorIs(t, <-goneErr, context.Canceled)
	close(f.first)

	require.NoError(t, <-results)
	for i, name := range names {
		err := <-errs[i]
		if name == "bad" {
			require.ErrorIs(t, err, kafkago.InvalidReplicationFactor)
			require.ErrorContains(t, err, "sent with 6 other topics")
			continue
		}
		require.NoError(t, err, name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.requests, 2, "one request for the first creation, one for all those asked for while it was out: %q", f.requests)
	require.Equal(t, []string{"t0"}, f.requests[0])
	require.ElementsMatch(t, []string{"t1", "t2", "t3", "t4", "t5", "bad", "gone"}, f.requests[1])
}

// A request that fails fails every creation it carried, each with the request's error; the
// next creation is a new request.
func TestTopicCreatesRequestErrorReachesEveryCaller(t *testing.T) {
	boom := errors.New("broker gone")
	calls := 0
	tc := &topicCreates{timeout: time.Minute, send: func(ctx context.Context, topics []kafkago.TopicConfig) (map[string]error, error) {
		calls++
		if calls == 1 {
			return nil, boom
		}
		return nil, nil
	}}
	require.ErrorIs(t, tc.create(context.Background(), kafkago.TopicConfig{Topic: "a"}), boom)
	require.NoError(t, tc.create(context.Background(), kafkago.TopicConfig{Topic: "a"}))
	require.Equal(t, 2, calls)
}

// The request runs on behalf of all it carries: the context of the caller that started it
// does not cancel it, its own timeout bounds it.
func TestTopicCreatesRequestOutlivesItsFirstCaller(t *testing.T) {
	started, answered := make(chan struct{}), make(chan error, 1)
	release := make(chan struct{})
	tc := &topicCreates{timeout: time.Minute, send: func(ctx context.Context, topics []kafkago.TopicConfig) (map[string]error, error) {
		close(started)
		<-release
		answered <- ctx.Err()
		return nil, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- tc.create(ctx, kafkago.TopicConfig{Topic: "a"}) }()
	<-started
	cancel()
	require.ErrorIs(t, <-first, context.Canceled)
	close(release)
	require.NoError(t, <-answered, "the request's context was cancelled with its first caller's")
}
