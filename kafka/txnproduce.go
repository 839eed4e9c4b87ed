package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/rawproduce"

	"github.com/keysetsync/keysetsync/sink"
)

// txnStream is what is left to send to one partition in a Produce call.
type txnStream struct {
	tp      txnPartition
	batches [][]sink.Message
	seq     int32  // base sequence of batches[0]
	end     int64  // offset after the last record acknowledged, -1 before any
	encoded []byte // batches[0] as sent, kept for resending it with the same sequence
	err     error  // final
	retry   error  // last transient failure of batches[0]
}

// produceAll sends every stream's batches. Each round sends, per partition leader, ONE produce
// request holding the next batch of each of its partitions, as the Java client does: Kafka 4.x
// leaders verify with the coordinator that a partition is in the transaction (KIP-890) and
// answer a request whose verification is overtaken by another one of the same transactional
// id with NOT_ENOUGH_REPLICAS ("Unable to verify ... NETWORK_EXCEPTION"), which parallel
// single-partition requests provoke on most rounds. A partition thus has at most one batch in
// flight; its sequence advances when the batch is acknowledged. Retriable answers resend the
// same bytes in the next round, after a backoff, until ctx ends; transport failures only for
// TxnConfig.TransportRetry in a row.
func (p *TxnProducer) produceAll(ctx context.Context, streams []*txnStream, now time.Time) {
	var b txnBackoff
	gate := p.gate()
	for {
		var active []*txnStream
		for _, s := range streams {
			if s.err == nil && len(s.batches) > 0 {
				active = append(active, s)
			}
		}
		if len(active) == 0 {
			return
		}
		groups, err := p.byLeader(ctx, active)
		if err != nil {
			for _, s := range active {
				s.retry = err
			}
		} else {
			var wg sync.WaitGroup
			for _, g := range groups {
				wg.Go(func() { p.sendRound(ctx, g, now) })
			}
			wg.Wait()
		}
		var retrying []*txnStream
		for _, s := range active {
			if s.retry != nil && s.err == nil {
				retrying = append(retrying, s)
			}
		}
		if len(retrying) == 0 {
			b = txnBackoff{}
			continue
		}
		p.leaders = nil // a leader may have moved: the retry groups by fresh metadata
		// A round is a transport failure only if no partition got an answer from a broker.
		transport := retrying[0].retry
		for _, s := range retrying {
			if !txnTransport(ctx, s.retry) {
				transport = s.retry
				break
			}
		}
		if !gate.allow(ctx, transport) {
			for _, s := range retrying {
				s.err = p.produceErr(s, gate.spent(s.retry))
			}
			continue
		}
		p.log.Debug("transient answer, retrying", "request", "Produce", "partitions", len(retrying), "err", retrying[0].retry)
		if werr := b.wait(ctx); werr != nil {
			for _, s := range retrying {
				s.err = errors.Join(s.retry, werr)
			}
		}
	}
}

// byLeader groups streams by their partition's leader, as the last Metadata answer gave it
// (p.leaders), asking again when a stream's partition is not in it. A leader that moved since
// is caught by kafka-go's routing ("mismatching leaders") or the broker
// (NOT_LEADER_OR_FOLLOWER), both retried, and a round with any transient answer drops the
// cache (produceAll), so the retry groups by fresh metadata.
func (p *TxnProducer) byLeader(ctx context.Context, streams []*txnStream) (map[int][]*txnStream, error) {
	var topics []string
	seen := map[string]bool{}
	for _, s := range streams {
		if _, ok := p.leaders[s.tp]; !ok && !seen[s.tp.topic] {
			seen[s.tp.topic] = true
			topics = append(topics, s.tp.topic)
		}
	}
	if len(topics) > 0 {
		md, err := p.cfg.Client.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
		if err != nil {
			return nil, fmt.Errorf("metadata of %v: %w", topics, err)
		}
		if p.leaders == nil {
			p.leaders = map[txnPartition]int{}
		}
		for _, t := range md.Topics {
			for _, pt := range t.Partitions {
				p.leaders[txnPartition{t.Name, pt.ID}] = pt.Leader.ID
			}
		}
	}
	groups := map[int][]*txnStream{}
	for _, s := range streams {
		l, ok := p.leaders[s.tp]
		if !ok {
			return nil, fmt.Errorf("metadata: no leader known for %s/%d: %w", s.tp.topic, s.tp.partition, kafkago.LeaderNotAvailable)
		}
		groups[l] = append(groups[l], s)
	}
	return groups, nil
}

// sendRound sends the next batch of each stream (all led by one broker) in one request and
// records each partition's outcome.
func (p *TxnProducer) sendRound(ctx context.Context, streams []*txnStream, now time.Time) {
	req := &rawproduce.Request{TransactionalID: p.cfg.TransactionalID, Acks: int16(kafkago.RequireAll), Timeout: p.produceTimeoutMs(ctx)}
	byTopic := map[string]int{}
	for _, s := range streams {
		s.retry = nil
		if s.encoded == nil {
			b, err := txnEncodeBatch(s.batches[0], txnBatchIdentity{producerID: p.pid, epoch: p.epoch, baseSequence: s.seq}, now)
			if err != nil {
				s.err = p.produceErr(s, err)
				continue
			}
			s.encoded = b
		}
		i, ok := byTopic[s.tp.topic]
		if !ok {
			i = len(req.Topics)
			byTopic[s.tp.topic] = i
			req.Topics = append(req.Topics, rawproduce.RequestTopic{Topic: s.tp.topic})
		}
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rawproduce.RequestPartition{
			Partition: int32(s.tp.partition),
			RecordSet: protocol.RawRecordSet{Reader: bytes.NewReader(s.encoded)},
		})
	}
	if len(req.Topics) == 0 {
		return
	}
	res, err := p.roundTrip(ctx, req)
	answers := map[txnPartition]produce.ResponsePartition{}
	if err == nil {
		for _, t := range res.Topics {
			for _, pr := range t.Partitions {
				answers[txnPartition{t.Topic, int(pr.Partition)}] = pr
			}
		}
	}
	for _, s := range streams {
		if s.err != nil {
			continue
		}
		perr, base := err, int64(-1)
		if err == nil {
			pr, ok := answers[s.tp]
			base = pr.BaseOffset
			switch {
			case !ok:
				perr = fmt.Errorf("partition missing from the produce answer: %w", kafkago.NetworkException)
			case pr.ErrorCode == 0 || pr.ErrorCode == int16(kafkago.DuplicateSequenceNumber):
				// A duplicate is this batch written by an earlier attempt.
			case pr.ErrorMessage != "":
				perr = fmt.Errorf("%w: %s", kafkago.Error(pr.ErrorCode), pr.ErrorMessage)
			default:
				perr = kafkago.Error(pr.ErrorCode)
			}
			if perr == nil && len(pr.RecordErrors) > 0 {
				perr = fmt.Errorf("record %d: %s: %w", pr.RecordErrors[0].BatchIndex, pr.RecordErrors[0].BatchIndexErrorMessage, kafkago.InvalidMessage)
			}
		}
		switch {
		case perr == nil:
			s.seq = txnNextSequence(s.seq, len(s.batches[0]))
			if base >= 0 { // -1 answers a duplicate whose offset the broker forgot
				s.end = base + int64(len(s.batches[0]))
			}
			s.batches, s.encoded = s.batches[1:], nil
		case txnProduceRetriable(ctx, perr):
			s.retry = perr
		default:
			s.err = p.produceErr(s, perr)
		}
	}
}

func (p *TxnProducer) produceErr(s *txnStream, err error) error {
	what := fmt.Sprintf("produce %d records to %s/%d (producer id %d, epoch %d, sequence %d)", len(s.batches[0]), s.tp.topic, s.tp.partition, p.pid, p.epoch, s.seq)
	if errors.Is(err, kafkago.ProducerFenced) {
		return p.fencedErr(err, "%s", what)
	}
	return p.errorf(err, "%s", what)
}

// roundTrip sends req through the client's transport (kafka-go's Client.RawProduce takes one
// partition only).
func (p *TxnProducer) roundTrip(ctx context.Context, req *rawproduce.Request) (*produce.Response, error) {
	return txnRoundTrip[*produce.Response](ctx, p.cfg.Client.client, req, "produce")
}

// txnRoundTrip sends req through c's transport, which routes it (a partition's leader, a
// coordinator) and negotiates its version, and applies c's timeout as c's methods do. It serves
// the requests whose kafka-go Client method lacks what is needed here.
func txnRoundTrip[R protocol.Message](ctx context.Context, c *kafkago.Client, req protocol.Message, what string) (R, error) {
	var zero R
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	rt := c.Transport
	if rt == nil {
		rt = kafkago.DefaultTransport
	}
	m, err := rt.RoundTrip(ctx, c.Addr, req)
	if err != nil {
		return zero, fmt.Errorf("%s request: %w", what, err)
	}
	res, ok := m.(R)
	if !ok {
		return zero, fmt.Errorf("%s request: unexpected answer %T", what, m)
	}
	return res, nil
}

// produceTimeoutMs is the broker's time to reach acks=all: half of what is left of ctx and the
// client's timeout (the other half for the network, as kafka-go does), 30s without either.
func (p *TxnProducer) produceTimeoutMs(ctx context.Context) int32 {
	d := 60 * time.Second
	if p.cfg.Client.client.Timeout > 0 {
		d = p.cfg.Client.client.Timeout
	}
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return int32(max(d/2, time.Millisecond) / time.Millisecond)
}
