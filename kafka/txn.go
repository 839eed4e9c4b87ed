package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/sink"
)

// TxnConfig configures a TxnProducer.
type TxnConfig struct {
	// Client talks to the cluster. Its Transport routes each transactional request to the
	// transaction coordinator (it runs FindCoordinator itself) and each produce request to the
	// partition's leader.
	Client *Client
	// TransactionalID names the producer across restarts: a new producer with the same id
	// fences the previous one.
	TransactionalID string
	// TransactionTimeout is how long the coordinator lets a transaction stay open before it
	// aborts it (default 60s; the broker caps it at transaction.max.timeout.ms, 15 min by
	// default, and answers INVALID_TRANSACTION_TIMEOUT beyond).
	TransactionTimeout time.Duration
	// MaxMessageBytes is the smallest max.message.bytes of the topics the producer writes (0:
	// the broker's default): a partition's records of one Produce are cut into record batches
	// that fit it, and a message larger than sink.MaxSize of it fails the Produce before
	// anything is sent (MESSAGE_TOO_LARGE).
	MaxMessageBytes int
	// TransportRetry is how long transport failures in a row (connection refused or reset, a
	// broker that cannot be reached) are retried within one request before it fails with a
	// retryable error (default 10s, about as long as kafka-go's writer tries). Answers of a live
	// broker that say "not now" are retried until ctx ends regardless.
	TransportRetry time.Duration
	// Logger receives retries of transient answers (debug) and transaction ends (debug).
	Logger *slog.Logger
}

// TxnProducer is a transactional Kafka producer built on kafka-go's protocol primitives:
// InitProducerID, AddPartitionsToTxn, RawProduce with record batches that carry the producer
// id, epoch, per-partition sequence and the transactional attribute, and EndTxn. It speaks
// the pre-KIP-890 transaction protocol (transaction version 1: explicit AddPartitionsToTxn
// v3, Produce up to v8, EndTxn v3, the highest kafka-go has), which Kafka 4.x still serves.
//
// Use: Begin, Produce any number of times, then Commit or Abort; one call at a time (the
// methods take a lock, they do not pipeline). After any error from Produce or Commit, call
// Abort before the next Begin; Commit refuses to commit a transaction one of whose Produce
// calls failed (some of its records may be missing). An error matching ErrFenced is final:
// build a new producer (which fences whoever holds the id now).
//
// Protocol cases:
//   - InitProducerID, AddPartitionsToTxn, EndTxn: NOT_COORDINATOR,
//     COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS,
//     TRANSACTION_COORDINATOR_FENCED, REQUEST_TIMED_OUT and transport failures are retried
//     with backoff until ctx ends (all three requests are idempotent for one producer id and
//     epoch). OPERATION_NOT_ATTEMPTED (AddPartitionsToTxn: another partition of the request
//     failed) is retried too. PRODUCER_FENCED and INVALID_PRODUCER_EPOCH are ErrFenced.
//   - Produce: one request per partition leader holding one batch per partition (see
//     produceAll), so a partition never has more than one batch in flight. NOT_LEADER_OR_FOLLOWER,
//     REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS(_AFTER_APPEND) and other retriable answers and
//     transport failures resend the same bytes (same sequence) until ctx ends; a duplicate
//     is answered with the first write's offset or DUPLICATE_SEQUENCE_NUMBER, both success.
//     A partition's sequence advances only when its batch is acknowledged (acks=all).
//     OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_ID_MAPPING,
//     INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE, MESSAGE_TOO_LARGE and every other answer,
//     and giving up on a retry, fail the transaction: the sequences are no longer known. Abort
//     then sends EndTxn(abort), whose PRODUCER_FENCED is ErrFenced (the leader's
//     INVALID_PRODUCER_EPOCH cannot tell fencing from a timed-out transaction; the
//     coordinator's EndTxn can), and re-initialises the producer id with the current id and
//     epoch (KIP-360, InitProducerID v3+), which aborts the transaction if still open, bumps
//     the epoch and restarts every sequence at 0. PRODUCER_FENCED from a leader is ErrFenced.
//   - EndTxn on a transaction without partitions is not sent: the coordinator answers it
//     INVALID_TXN_STATE in transaction version 1.
//   - A Commit whose outcome is unknown (ctx ended during retries, or an unexpected answer)
//     fails; Abort then ends it as above: EndTxn(abort) answers INVALID_TXN_STATE if the
//     commit had landed, and the re-initialisation aborts it if it was still open. The
//     caller cannot know which: it must resume from what it reads back (read_committed).
type TxnProducer struct {
	cfg TxnConfig
	log *slog.Logger

	mu         sync.Mutex
	pid        int64
	epoch      int16
	seq        map[txnPartition]int32 // next base sequence per partition, for pid/epoch
	partitions map[string][]int       // topic -> sorted partition ids
	balancer   kafkago.Murmur2Balancer
	// leaders caches each partition's leader from the last Metadata answer (byLeader), until a
	// produce round meets any transient answer: asking for it before every round was one
	// request per transaction, a fifth of a thousand pipelines' requests.
	leaders map[txnPartition]int

	inTxn   bool
	added   map[txnPartition]bool  // partitions added to the open transaction
	written map[txnPartition]int64 // per partition, the offset after the open transaction's last record
	failed  error                  // why the open transaction must be aborted (sequences unknown)
	fenced  error                  // final
	closed  bool
	timeout time.Duration
	began   time.Time // when the open transaction began
}

type txnPartition struct {
	topic     string
	partition int
}

// NewTxnProducer finds the transaction coordinator for cfg.TransactionalID and initialises
// the producer id (InitProducerID), which fences any previous producer with the id and aborts
// its open transaction. Transient answers (see TxnProducer) are retried until ctx ends.
func NewTxnProducer(ctx context.Context, cfg TxnConfig) (*TxnProducer, error) {
	if cfg.Client == nil {
		return nil, errors.New("transactional producer: no kafka client")
	}
	if cfg.TransactionalID == "" {
		return nil, errors.New("transactional producer: no transactional id")
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = 60 * time.Second
	}
	if cfg.TransportRetry <= 0 {
		cfg.TransportRetry = 10 * time.Second
	}
	p := &TxnProducer{
		cfg:        cfg,
		log:        cfg.Logger,
		pid:        -1,
		epoch:      -1,
		seq:        map[txnPartition]int32{},
		partitions: map[string][]int{},
		added:      map[txnPartition]bool{},
		written:    map[txnPartition]int64{},
		timeout:    cfg.TransactionTimeout,
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("transactional_id", cfg.TransactionalID)

	// At construction only the caller's ctx bounds the wait (the broker may be starting).
	err := txnRetry(ctx, nil, txnCoordinatorTransient, p.logRetry("FindCoordinator"), func(ctx context.Context) error {
		res, err := cfg.Client.client.FindCoordinator(ctx, &kafkago.FindCoordinatorRequest{
			Key: cfg.TransactionalID, KeyType: kafkago.CoordinatorKeyTypeTransaction,
		})
		if err != nil {
			return err
		}
		return res.Error
	})
	if err != nil {
		return nil, p.errorf(err, "find transaction coordinator")
	}
	if err := p.initProducerID(ctx, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// initProducerID gets a producer id and epoch: a fresh one, or, with a current one, the same
// id with a bumped epoch (aborting any open transaction). Sequences restart at 0. gate bounds
// the retries of transport failures (nil: until ctx ends).
func (p *TxnProducer) initProducerID(ctx context.Context, gate *txnTransportGate) error {
	var pid int64
	var epoch int16
	err := txnRetry(ctx, gate, txnCoordinatorTransient, p.logRetry("InitProducerID"), func(ctx context.Context) error {
		res, err := p.cfg.Client.client.InitProducerID(ctx, &kafkago.InitProducerIDRequest{
			TransactionalID:      p.cfg.TransactionalID,
			TransactionTimeoutMs: int(p.timeout / time.Millisecond),
			ProducerID:           int(p.pid),
			ProducerEpoch:        int(p.epoch),
		})
		if err != nil {
			return err
		}
		if res.Error != nil {
			return res.Error
		}
		pid, epoch = int64(res.Producer.ProducerID), int16(res.Producer.ProducerEpoch)
		return nil
	})
	if err != nil {
		if p.pid >= 0 && txnCoordinatorFenced(err) {
			return p.fence(err, "re-initialise producer id %d epoch %d", p.pid, p.epoch)
		}
		return p.errorf(err, "initialise producer id")
	}
	p.log.Debug("producer id initialised", "producer_id", pid, "epoch", epoch, "previous_id", p.pid, "previous_epoch", p.epoch)
	p.pid, p.epoch = pid, epoch
	clear(p.seq)
	return nil
}

// Begin starts a transaction. It is local, as in the Java client: the coordinator learns of
// the transaction when its first partition is added.
func (p *TxnProducer) Begin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	if p.inTxn {
		return p.errorf(errors.New("a transaction is already open"), "begin transaction")
	}
	if p.failed != nil {
		return p.errorf(p.failed, "begin transaction: the previous transaction failed and was not aborted")
	}
	p.inTxn = true
	p.began = time.Now()
	return nil
}

// Produce writes msgs in the open transaction and returns when every record is acknowledged
// by all in-sync replicas (acks=all), or with the first failure; after a failure the
// transaction must be aborted. Each message goes to the partition murmur2 of its key picks
// over the topic's partitions, as a Java producer would; messages of one partition keep their
// order.
func (p *TxnProducer) Produce(ctx context.Context, msgs []sink.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	if !p.inTxn {
		return p.errorf(errors.New("no open transaction (call Begin)"), "produce")
	}
	if p.failed != nil {
		return p.errorf(p.failed, "produce: the transaction failed earlier; abort it")
	}
	if len(msgs) == 0 {
		return nil
	}
	byPart, order, err := p.partition(ctx, msgs)
	if err != nil {
		return err // the transaction is intact: nothing was sent
	}
	streams := make([]*txnStream, len(order))
	for i, tp := range order {
		batches, err := txnSplit(tp, byPart[tp], p.cfg.MaxMessageBytes)
		if err != nil {
			return p.errorf(err, "produce") // nothing was sent either
		}
		streams[i] = &txnStream{tp: tp, batches: batches, seq: p.seq[tp], end: -1}
	}
	if err := p.addPartitions(ctx, order); err != nil {
		return err
	}
	p.produceAll(ctx, streams, time.Now())
	var errs []error
	for _, s := range streams {
		p.seq[s.tp] = s.seq // advanced over the batches acknowledged, even on failure
		if s.end >= 0 {
			p.written[s.tp] = s.end
		}
		if s.err != nil {
			errs = append(errs, s.err)
		}
	}
	if len(errs) > 0 {
		err := errors.Join(errs...)
		if fe := (*txnFencedError)(nil); errors.As(err, &fe) {
			p.fenced = err
		} else {
			p.failed = err
		}
		return err
	}
	return nil
}

// partition groups msgs by partition, keeping their order, and lists the partitions in the
// order they first appear.
func (p *TxnProducer) partition(ctx context.Context, msgs []sink.Message) (map[txnPartition][]sink.Message, []txnPartition, error) {
	byPart := map[txnPartition][]sink.Message{}
	var order []txnPartition
	for _, m := range msgs {
		parts, err := p.topicPartitions(ctx, m.Topic)
		if err != nil {
			return nil, nil, err
		}
		tp := txnPartition{m.Topic, p.balancer.Balance(kafkago.Message{Key: m.Key}, parts...)}
		if _, ok := byPart[tp]; !ok {
			order = append(order, tp)
		}
		byPart[tp] = append(byPart[tp], m)
	}
	return byPart, order, nil
}

// topicPartitions returns the sorted partition ids of a topic, from the client's metadata,
// cached for the producer's life (partitions are only ever added, and a topic whose partition
// count changes moves keys anyway). A topic the client does not know yet (kafka-go's
// transport caches metadata) is asked for again until ctx ends.
func (p *TxnProducer) topicPartitions(ctx context.Context, name string) ([]int, error) {
	if parts, ok := p.partitions[name]; ok {
		return parts, nil
	}
	var parts []int
	err := txnRetry(ctx, p.gate(), func(ctx context.Context, err error) bool {
		return errors.Is(err, kafkago.UnknownTopicOrPartition) || errors.Is(err, kafkago.LeaderNotAvailable) || txnTransport(ctx, err)
	}, p.logRetry("Metadata"), func(ctx context.Context) (err error) {
		parts, err = p.cfg.Client.Partitions(ctx, name)
		return err
	})
	if err != nil {
		return nil, p.errorf(err, "partitions of topic %q", name)
	}
	slices.Sort(parts)
	p.partitions[name] = parts
	return parts, nil
}

// addPartitions adds the partitions new to the open transaction (AddPartitionsToTxn) before
// anything is produced to them: a leader rejects transactional batches for a partition the
// coordinator does not know to be in the transaction.
func (p *TxnProducer) addPartitions(ctx context.Context, parts []txnPartition) error {
	topics := map[string][]kafkago.AddPartitionToTxn{}
	var adding []txnPartition
	for _, tp := range parts {
		if !p.added[tp] {
			topics[tp.topic] = append(topics[tp.topic], kafkago.AddPartitionToTxn{Partition: tp.partition})
			adding = append(adding, tp)
		}
	}
	if len(adding) == 0 {
		return nil
	}
	err := txnRetry(ctx, p.gate(), func(ctx context.Context, err error) bool {
		return txnCoordinatorTransient(ctx, err) || errors.Is(err, txnOperationNotAttempted)
	}, p.logRetry("AddPartitionsToTxn"), func(ctx context.Context) error {
		res, err := p.cfg.Client.client.AddPartitionsToTxn(ctx, &kafkago.AddPartitionsToTxnRequest{
			TransactionalID: p.cfg.TransactionalID,
			ProducerID:      int(p.pid),
			ProducerEpoch:   int(p.epoch),
			Topics:          topics,
		})
		if err != nil {
			return err
		}
		return txnAddErrors(res, adding)
	})
	if err != nil {
		if txnCoordinatorFenced(err) {
			return p.fence(err, "add %d partitions to the transaction", len(adding))
		}
		// Nothing was produced for these partitions; the transaction may still be
		// committed if the caller wants, but it is safer to make it abort.
		p.failed = err
		return p.errorf(err, "add %d partitions to the transaction", len(adding))
	}
	for _, tp := range adding {
		p.added[tp] = true
	}
	return nil
}

// txnAddErrors is the first error of an AddPartitionsToTxn answer that is not
// OPERATION_NOT_ATTEMPTED (that one says another partition failed), or that, or a partition
// missing from the answer.
func txnAddErrors(res *kafkago.AddPartitionsToTxnResponse, want []txnPartition) error {
	got := map[txnPartition]error{}
	for t, parts := range res.Topics {
		for _, pr := range parts {
			got[txnPartition{t, pr.Partition}] = pr.Error
		}
	}
	var notAttempted error
	for _, tp := range want {
		err, ok := got[tp]
		switch {
		case !ok:
			return fmt.Errorf("partition %s/%d missing from the answer", tp.topic, tp.partition)
		case errors.Is(err, txnOperationNotAttempted):
			notAttempted = fmt.Errorf("partition %s/%d: %w", tp.topic, tp.partition, err)
		case err != nil:
			return fmt.Errorf("partition %s/%d: %w", tp.topic, tp.partition, err)
		}
	}
	return notAttempted
}

// Commit commits the open transaction (EndTxn) and returns once its records are visible to
// read_committed readers: the last stable offset of each of its partitions is past them (see
// awaitStable). It refuses when a Produce of the transaction failed; Abort then. An error after
// EndTxn succeeded says the transaction is committed but not yet visible.
func (p *TxnProducer) Commit(ctx context.Context) error {
	return p.end(ctx, true, p.gate())
}

// Abort aborts the open transaction: its records never become visible to read_committed
// readers. After a failed Produce or Commit, it also re-initialises the producer id (see
// TxnProducer). It is a no-op without an open transaction, except that it
// still repairs a producer whose sequences are unknown.
func (p *TxnProducer) Abort(ctx context.Context) error {
	return p.end(ctx, false, p.gate())
}

// txnQuickTransport is how long an abort retries transport failures when the broker was just
// found unreachable (abortUnreachable): long enough for a connection the pool kept from
// before a broker restart to be replaced, short enough that a broker that is down fails the
// abort at once rather than holding the caller's retry loop.
const txnQuickTransport = time.Second

// abortUnreachable is Abort after a failure that said the broker could not be reached (see
// errTxnUnreachable): it gives up on transport failures after txnQuickTransport. A transaction
// it could not abort stays open at the coordinator, which aborts it at TransactionTimeout or
// when the next InitProducerID (this producer's next Abort, or a new instance's) bumps the
// epoch; none of its records become visible meanwhile. The producer stays failed until an
// Abort completes.
func (p *TxnProducer) abortUnreachable(ctx context.Context) error {
	return p.end(ctx, false, &txnTransportGate{budget: txnQuickTransport})
}

// gate bounds the transport failures of one request by TxnConfig.TransportRetry.
func (p *TxnProducer) gate() *txnTransportGate {
	return &txnTransportGate{budget: p.cfg.TransportRetry}
}

func (p *TxnProducer) end(ctx context.Context, commit bool, gate *txnTransportGate) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	what := "abort transaction"
	if commit {
		what = "commit transaction"
	}
	if err := p.usable(); err != nil {
		return err
	}
	if p.failed != nil {
		if commit {
			return p.errorf(p.failed, "%s: refused, the transaction failed earlier; abort it", what)
		}
		return p.recover(ctx, gate)
	}
	if !p.inTxn {
		if !commit {
			return nil
		}
		return p.errorf(errors.New("no open transaction"), "%s", what)
	}
	if len(p.added) == 0 {
		p.finish()
		return nil
	}
	if err := p.endTxn(ctx, commit, gate); err != nil {
		if txnCoordinatorFenced(err) {
			return p.fence(err, "%s", what)
		}
		p.failed = err
		return p.errorf(err, "%s (outcome unknown; Abort re-initialises the producer)", what)
	}
	p.log.Debug("transaction ended", "commit", commit, "partitions", len(p.added), "producer_id", p.pid, "epoch", p.epoch)
	if commit {
		if err := p.awaitStable(ctx); err != nil {
			p.finish() // committed all the same: the next transaction may begin
			return p.errorf(err, "%s: committed, but read_committed readers do not see it yet", what)
		}
	}
	p.finish()
	return nil
}

// errTxnNotStable: a partition's last stable offset is not yet past the transaction.
var errTxnNotStable = errors.New("last stable offset not yet past the transaction")

// awaitStable returns once the last stable offset of every partition of the committed
// transaction is past its records: read_committed readers then see it. EndTxn answers once the
// coordinator has logged the decision, before the partition leaders have its markers, and until
// they do a partition's last stable offset stays at the transaction's first record: a reader
// that starts right after the commit (a tail from the end, the next pass's cursor load, a
// verify) would read up to there only, or start before the transaction it just saw committed.
// The markers take milliseconds; another producer's transaction open since before ours holds
// the last stable offset too, and this waits for it as well, until ctx ends.
func (p *TxnProducer) awaitStable(ctx context.Context) error {
	// One ListOffsets call per attempt for every partition not yet stable: a partition shared
	// with other pipelines (the cursor topic's) may take several attempts while the others
	// were stable at the first, and asking again for those, a request per topic, made most of
	// a thousand pipelines' requests.
	pending := maps.Clone(p.written)
	return txnRetry(ctx, p.gate(), func(ctx context.Context, err error) bool {
		return errors.Is(err, errTxnNotStable) || txnReadTransient(ctx, err)
	}, p.logRetry("ListOffsets"), func(ctx context.Context) error {
		parts := map[string][]int{}
		for tp := range pending {
			parts[tp.topic] = append(parts[tp.topic], tp.partition)
		}
		lso, err := p.cfg.Client.lastOffsets(ctx, parts, true)
		if err != nil {
			return err
		}
		var behind []string
		for tp, want := range pending {
			if at := lso[tp]; at < want {
				behind = append(behind, fmt.Sprintf("%s/%d at %d, the transaction ends at %d", tp.topic, tp.partition, at, want))
				continue
			}
			delete(pending, tp)
		}
		if len(behind) > 0 {
			slices.Sort(behind)
			return fmt.Errorf("%s: %w", strings.Join(behind, "; "), errTxnNotStable)
		}
		return nil
	})
}

// recover aborts a failed transaction and restarts the sequences. EndTxn(abort) comes first
// because its answer tells fencing apart: the coordinator checks the epoch strictly there
// (PRODUCER_FENCED), while an InitProducerID with our id and epoch may be accepted from a
// fenced producer (kfake accepts any older epoch; Kafka accepts the epoch before a bump).
// Other answers to it are not final: the transaction may be complete already (a commit whose
// answer was lost: INVALID_TXN_STATE), and the re-initialisation that follows aborts it if it
// is still open. That one bumps the epoch, so every partition's sequence restarts at 0.
func (p *TxnProducer) recover(ctx context.Context, gate *txnTransportGate) error {
	if p.inTxn && len(p.added) > 0 {
		if err := p.endTxn(ctx, false, gate); txnCoordinatorFenced(err) {
			return p.fence(err, "abort failed transaction")
		} else if errors.Is(err, errTxnUnreachable) {
			// InitProducerID would not reach it either. The transaction stays open until the
			// coordinator aborts it at TransactionTimeout, or the next InitProducerID (our next
			// Abort, or a new instance's) fences it; nothing of it becomes visible meanwhile.
			return p.errorf(err, "abort failed transaction (left to the coordinator's timeout or the next abort)")
		} else if err != nil {
			p.log.Debug("abort of a failed transaction not confirmed; re-initialising aborts it", "err", err)
		}
	}
	if err := p.initProducerID(ctx, gate); err != nil {
		return err
	}
	p.failed = nil
	p.finish()
	return nil
}

func (p *TxnProducer) endTxn(ctx context.Context, commit bool, gate *txnTransportGate) error {
	return txnRetry(ctx, gate, txnCoordinatorTransient, p.logRetry("EndTxn", "commit", commit), func(ctx context.Context) error {
		res, err := p.cfg.Client.client.EndTxn(ctx, &kafkago.EndTxnRequest{
			TransactionalID: p.cfg.TransactionalID,
			ProducerID:      int(p.pid),
			ProducerEpoch:   int(p.epoch),
			Committed:       commit,
		})
		if err != nil {
			return err
		}
		return res.Error
	})
}

func (p *TxnProducer) finish() {
	p.inTxn = false
	clear(p.added)
	clear(p.written)
}

// Close releases the producer. An open transaction is left to the coordinator: it aborts it
// after TransactionTimeout, or when the next producer with this transactional id starts.
func (p *TxnProducer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

func (p *TxnProducer) usable() error {
	switch {
	case p.closed:
		return p.errorf(errors.New("closed"), "transactional producer")
	case p.fenced != nil:
		return p.fenced
	}
	return nil
}

// txnFencedError marks an error as fencing, so Produce can tell it from per-partition
// failures it joins.
type txnFencedError struct{ err error }

func (e *txnFencedError) Error() string { return e.err.Error() }
func (e *txnFencedError) Unwrap() error { return e.err }

func (p *TxnProducer) fencedErr(cause error, format string, args ...any) error {
	var outlived string
	if open := time.Since(p.began); p.inTxn && open >= p.timeout {
		// The coordinator aborts a transaction open past the timeout with an epoch bump and
		// then answers PRODUCER_FENCED, as to a fenced producer: the two read the same (see
		// ErrFenced), so the error names both.
		outlived = fmt.Sprintf(", or this instance's transaction outlived the transaction timeout (%s; it was open %s, the broker aborted it)",
			p.timeout, open.Round(time.Millisecond))
	}
	return &txnFencedError{fmt.Errorf("transactional id %q: %s: %w%s (%w)", p.cfg.TransactionalID, fmt.Sprintf(format, args...), ErrFenced, outlived, cause)}
}

// fence records that the producer is fenced and returns the error saying so.
func (p *TxnProducer) fence(cause error, format string, args ...any) error {
	p.fenced = p.fencedErr(cause, format, args...)
	p.log.Warn("producer fenced", "err", p.fenced)
	return p.fenced
}

func (p *TxnProducer) errorf(cause error, format string, args ...any) error {
	return fmt.Errorf("transactional id %q: %s: %w", p.cfg.TransactionalID, fmt.Sprintf(format, args...), cause)
}

func (p *TxnProducer) logRetry(request string, attrs ...any) func(error, int) {
	return func(err error, attempt int) {
		p.log.Debug("transient answer, retrying", append([]any{"request", request, "attempt", attempt, "err", err}, attrs...)...)
	}
}
