package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/cursor"
)

// errStoreClosed: Load on a CursorStore after Close.
var errStoreClosed = errors.New("cursor store is closed")

// follower keeps the latest cursor record of every key of the cursor topic in memory, as
// Kafka Connect's KafkaBasedLog keeps its offsets topic: it reads the topic once, then only
// what was written since, and only when a Load asks. A Load must see every cursor committed
// before it began (cursor.Store), so each Load waits for a catch-up (readToEnd) that listed
// the end offsets after the Load began: a Load that arrives while one is under way joins the
// next, and every Load waiting then shares it. An idle topic costs one ListOffsets per
// catch-up, whatever its size; memory holds one cursor per key and partition.
//
// Catch-ups run on the follower's goroutine, with its context, not a Load's: a Load giving up
// does not cut short a read others wait for.
type follower struct {
	client *Client
	topic  string
	log    *slog.Logger

	stop context.CancelFunc
	done chan struct{}
	wake chan struct{} // capacity 1: a catch-up is pending

	mu      sync.Mutex
	pending *catchUp // what a Load arriving now waits for; nil: none requested yet
	closed  bool
	view    *followView // published state, replaced whole when the topic is read again from scratch
}

// catchUp is one readToEnd: done closes when it ends, err says how.
type catchUp struct {
	done chan struct{}
	err  error
}

// followView is the cursor topic as read so far.
type followView struct {
	next    map[int]int64               // by partition: the offset to read next
	cursors map[string]map[int]*keySlot // by key, then partition
}

// keySlot is what the records of one key in one partition say, in the terms of Load's rules
// (a scan of the partitions in order, the highest Seq winning, a tombstone erasing what was
// read before it, an unreadable record superseded by any later record of its key in its
// partition).
type keySlot struct {
	tombstone bool   // a tombstone was read: it erases the cursors of earlier partitions too
	value     []byte // the readable cursor of the highest Seq since the last tombstone; nil: none
	seq       int64
	offset    int64
	corrupt   *cursor.CorruptError // the last unreadable record not superseded; Pipeline, At, Err set
}

func newFollowView() *followView {
	return &followView{next: map[int]int64{}, cursors: map[string]map[int]*keySlot{}}
}

func newFollower(client *Client, topic string, log *slog.Logger) *follower {
	ctx, stop := context.WithCancel(context.Background())
	f := &follower{client: client, topic: topic, log: log, stop: stop, done: make(chan struct{}), wake: make(chan struct{}, 1), view: newFollowView()}
	// The first read starts now, without a Load waiting: by the first Load it is under way.
	f.pending = &catchUp{done: make(chan struct{})}
	f.wake <- struct{}{}
	go f.run(ctx)
	return f
}

func (f *follower) run(ctx context.Context) {
	defer close(f.done)
	for {
		select {
		case <-ctx.Done():
			f.mu.Lock()
			if p := f.pending; p != nil {
				p.err, f.pending = errStoreClosed, nil
				close(p.done)
			}
			f.mu.Unlock()
			return
		case <-f.wake:
		}
		f.mu.Lock()
		c := f.pending
		f.pending = nil // a Load from now on needs end offsets listed after it began: the next one
		f.mu.Unlock()
		if c == nil {
			continue
		}
		c.err = f.readToEnd(ctx)
		if c.err != nil && ctx.Err() != nil {
			c.err = errStoreClosed
		}
		close(c.done)
	}
}

// await returns once a catch-up that began after this call has read the topic to the end
// offsets it listed, or with its error, or ctx's.
func (f *follower) await(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return errStoreClosed
	}
	c := f.pending
	if c == nil {
		c = &catchUp{done: make(chan struct{})}
		f.pending = c
		select {
		case f.wake <- struct{}{}:
		default: // already signalled
		}
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the cursor topic %q to be read to its end: %w", f.topic, ctx.Err())
	}
}

// close stops the follower and waits for it; a catch-up under way ends with its context.
func (f *follower) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.stop()
	<-f.done
}

// readToEnd lists the end offsets (the last stable offsets: read_committed) of every partition
// and reads each partition up to there. A partition whose end is now below what was read (the
// topic deleted and created again), or that answers OFFSET_OUT_OF_RANGE (records deleted
// below the offset to read next), makes it read the whole topic again into a new view,
// published when complete so that no Load sees it half read.
func (f *follower) readToEnd(ctx context.Context) error {
	parts, err := f.client.Partitions(ctx, f.topic)
	if err != nil {
		return err
	}
	ends, err := f.endOffsets(ctx, parts)
	if err != nil {
		return err
	}
	f.mu.Lock()
	v := f.view
	f.mu.Unlock()
	if f.shrunk(v, ends) {
		f.log.Warn("the cursor topic ends before what was read of it (deleted and created again?): reading it again from its start", "topic", f.topic)
		v = newFollowView()
	}
	err = f.read(ctx, v, parts, ends)
	if errors.Is(err, kafkago.OffsetOutOfRange) && len(v.next) > 0 {
		f.log.Warn("the cursor topic no longer holds the offset to read next: reading it again from its start", "topic", f.topic, "err", err)
		v = newFollowView()
		err = f.read(ctx, v, parts, ends)
	}
	if err != nil {
		return Classify(err)
	}
	f.mu.Lock()
	f.view = v
	f.mu.Unlock()
	return nil
}

// shrunk says whether some partition read before is gone, or ends before the offset to read
// next in it.
func (f *follower) shrunk(v *followView, ends map[int]int64) bool {
	for p, next := range v.next {
		if end, ok := ends[p]; !ok || end < next {
			return true
		}
	}
	return false
}

// read reads each partition of v from its next offset (its first for a partition not read
// yet) up to at least its end in ends.
func (f *follower) read(ctx context.Context, v *followView, parts []int, ends map[int]int64) error {
	for _, p := range parts {
		from, seen := v.next[p]
		if !seen {
			from = TxnFirstOffset
		} else if from >= ends[p] {
			continue // nothing new: the idle case, no fetch
		}
		r := &txnReader{c: f.client.client, topic: f.topic, partition: p, committed: true, few: true}
		next, err := r.read(ctx, from, func(rec Record) error {
			f.apply(v, rec)
			return nil
		})
		if err != nil {
			return err
		}
		f.mu.Lock()
		v.next[p] = next
		f.mu.Unlock()
	}
	return nil
}

// apply folds one record into v, under the lock: v may be the published view that Loads read.
func (f *follower) apply(v *followView, r Record) {
	key := string(r.Key)
	at := func() string { return fmt.Sprintf("%s/%d offset %d", f.topic, r.Partition, r.Offset) } // rarely needed
	var c cursor.Cursor
	var decodeErr error
	if r.Value != nil {
		c, decodeErr = cursor.Unmarshal(r.Value)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	byPart := v.cursors[key]
	if byPart == nil {
		byPart = map[int]*keySlot{}
		v.cursors[key] = byPart
	}
	s := byPart[r.Partition]
	if s == nil {
		s = &keySlot{}
		byPart[r.Partition] = s
	}
	if s.corrupt != nil {
		f.log.Warn("an unreadable cursor record is superseded by a later one", "pipeline", key, "unreadable_at", s.corrupt.At, "err", s.corrupt.Err, "superseded_by", at())
		s.corrupt = nil
	}
	switch {
	case r.Value == nil:
		// A tombstone deletes the pipeline's cursor: start over.
		*s = keySlot{tombstone: true}
	case decodeErr != nil:
		s.corrupt = &cursor.CorruptError{Pipeline: key, At: at(), Err: decodeErr}
	case s.value == nil || c.Seq >= s.seq:
		s.value, s.seq, s.offset = r.Value, c.Seq, r.Offset
	}
}

// cursorOf answers Load from memory: what a scan of the partitions in order would find.
func (f *follower) cursorOf(pipeline string) (cursor.Cursor, error) {
	f.mu.Lock()
	byPart := f.view.cursors[pipeline]
	var best *keySlot
	bestPart := 0
	var corrupt []*cursor.CorruptError
	for _, p := range slices.Sorted(maps.Keys(byPart)) {
		s := byPart[p]
		if s.tombstone {
			best = nil
		}
		if s.value != nil && (best == nil || s.seq >= best.seq) {
			best, bestPart = s, p
		}
		if s.corrupt != nil {
			e := *s.corrupt
			corrupt = append(corrupt, &e)
		}
	}
	var value []byte
	var offset int64
	if best != nil {
		value, offset = best.value, best.offset
	}
	f.mu.Unlock()

	var found *cursor.Cursor
	if value != nil {
		// Decoded again for every Load: the caller gets maps of its own, and memory holds
		// the compact JSON rather than the decoded maps. It decoded when it was read.
		c, err := cursor.Unmarshal(value)
		if err != nil {
			return cursor.Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, err)
		}
		c.Pipeline, c.ReadFrom = pipeline, fmt.Sprintf("%s/%d offset %d", f.topic, bestPart, offset)
		found = &c
	}
	if len(corrupt) > 0 {
		e := corrupt[0] // the lowest partition's, as a scan would meet it first
		e.Readable = found
		return cursor.Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, e)
	}
	if found == nil {
		return cursor.Cursor{}, fmt.Errorf("pipeline %q in topic %q: %w", pipeline, f.topic, cursor.ErrNotFound)
	}
	return *found, nil
}

// endOffsets lists the last stable offset of each partition in one ListOffsets: where a
// read_committed consumer's end is. Transient Kafka answers are retried a few times, a
// network failure is returned at once (the caller's retries span a broker restart), as a
// scan does.
func (f *follower) endOffsets(ctx context.Context, parts []int) (map[int]int64, error) {
	reqs := make([]kafkago.OffsetRequest, 0, len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafkago.LastOffsetOf(p))
	}
	r := &txnReader{topic: f.topic, few: true}
	ends := make(map[int]int64, len(parts))
	err := txnRetry(ctx, nil, r.isTransient(), nil, func(ctx context.Context) error {
		res, err := f.client.listOffsets(ctx, f.topic, parts, reqs, true)
		for p, po := range res {
			ends[p] = po.LastOffset
		}
		return err
	})
	if err != nil {
		return nil, Classify(fmt.Errorf("%s (read_committed): end offsets: %w", f.topic, err))
	}
	return ends, nil
}
