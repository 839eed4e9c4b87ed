package pipeline

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// Sizes of messages. The Sink refuses a message larger than it accepts, for the whole batch
// (see sink.Size for how Kafka bounds it): the pipeline sizes its messages with the same count,
// to the smallest max.message.bytes of the topics it writes (sink.MaxSize), so a record whose
// message would be larger is invalid before it is produced (Pipeline.fits), and a dead letter
// is cut to fit (Pipeline.deadLetter): no batch can fail for its size on every pass.
const (
	// DefaultMaxRecordBytes is the largest data message accepted when Walk.MaxRecordBytes is 0.
	DefaultMaxRecordBytes = 1_000_000
	// maxTimeHeader bounds the length of the keysetsync.updated_at header's value (RFC 3339,
	// UTC, nanoseconds, a year of up to 5 digits or a sign) and its varint length.
	maxTimeHeader = 32 + 1
	// maxHeaderValue is what a dead letter's variable headers (request, error, field) are cut
	// to when even its key and value gone it would not fit: deadLetterFloor.
	maxHeaderValue = 1024
)

// sizeLimits are the limits a Pipeline derived from its Config.
type sizeLimits struct {
	batchBytes int    // the largest message the Sink takes, and the largest dead letter
	record     int    // the largest data message: the smaller of batchBytes and MaxRecordBytes
	why        string // how record was derived, for the error of a record over it
	fixedData  int    // what every data message counts besides key, value and updated_at
}

// newSizeLimits derives the limits of cfg, or says why the topics cannot take keysetsync's
// messages.
func newSizeLimits(cfg *Config, source string) (sizeLimits, error) {
	topicMax := cfg.TopicMaxMessageBytes
	if topicMax <= 0 {
		topicMax = sink.DefaultMaxMessageBytes
	}
	userMax := cfg.Walk.MaxRecordBytes
	if userMax <= 0 {
		userMax = DefaultMaxRecordBytes
	}
	l := sizeLimits{batchBytes: sink.MaxSize(topicMax)}
	from := fmt.Sprintf("topic %q accepts %d (its max.message.bytes %d less %d bytes of record batch header)", cfg.Topic, l.batchBytes, topicMax, sink.RecordBatchOverhead)
	if cfg.DLQTopic != "" {
		dlqMax := cfg.DLQMaxMessageBytes
		if dlqMax <= 0 {
			dlqMax = sink.DefaultMaxMessageBytes
		}
		if sink.MaxSize(dlqMax) < l.batchBytes {
			// One Sink writes both topics, and its limit applies to every message.
			l.batchBytes = sink.MaxSize(dlqMax)
			from = fmt.Sprintf("the dead-letter topic %q accepts %d (its max.message.bytes %d less %d bytes of record batch header; one sink writes both topics)", cfg.DLQTopic, l.batchBytes, dlqMax, sink.RecordBatchOverhead)
		}
	}
	l.record = min(userMax, l.batchBytes)
	l.why = fmt.Sprintf("the smaller of --max-record-bytes %d and what %s", userMax, from)
	l.fixedData = sink.VarintLen(3) + sink.HeaderSize(HeaderPipeline, []byte(cfg.Pipeline)) + sink.HeaderSize(HeaderSource, []byte(source)) +
		sink.VarintLen(len(HeaderUpdatedAt)) + len(HeaderUpdatedAt)
	if cfg.DLQTopic != "" {
		// A dead letter cut as far as it goes: no key, no value, variable headers cut.
		floor := deadLetterFloor(cfg.Pipeline, source)
		if l.batchBytes < floor {
			return l, fmt.Errorf("%s: a dead letter needs at least %d bytes", from, floor)
		}
	}
	if l.record < 1 {
		return l, fmt.Errorf("no message fits: %s", l.why)
	}
	return l, nil
}

// dataSize is the size of the data message of r, as Pipeline.message makes it.
func (s *Pipeline) dataSize(r *source.Record, timeLen int) int {
	value := 0
	if !r.Deleted {
		value = len(s.cfg.ValuePrefix) + len(r.Value)
	}
	return sink.MessageFraming + len(r.ID) + value + s.limits.fixedData + sink.VarintLen(timeLen) + timeLen
}

// fits refuses a valid record whose data message would be larger than the limit (the Walker
// then handles it as any invalid record). It costs a few additions per record: the exact length
// of the updated_at header is only computed for a record near the limit.
func (s *Pipeline) fits(r source.Record) error {
	if s.dataSize(&r, maxTimeHeader) <= s.limits.record {
		return nil
	}
	n := s.dataSize(&r, len(r.UpdatedAt.UTC().AppendFormat(nil, time.RFC3339Nano)))
	if n <= s.limits.record {
		return nil
	}
	value := 0
	if !r.Deleted {
		value = len(s.cfg.ValuePrefix) + len(r.Value)
	}
	return fmt.Errorf("its Kafka message would be %d bytes (key %d, value %d, headers and framing %d), over the limit of %d bytes: %s",
		n, len(r.ID), value, n-len(r.ID)-value, s.limits.record, s.limits.why)
}

// Header keys of a dead letter cut to fit (Pipeline.deadLetter).
const (
	HeaderTruncated     = "keysetsync.truncated"      // "true": the value is the start of the original JSON
	HeaderOriginalBytes = "keysetsync.original_bytes" // the size of the original JSON
)

// deadLetterFloor is the size of a dead letter cut as far as fit cuts it.
func deadLetterFloor(pipeline, source string) int {
	long := make([]byte, maxHeaderValue)
	m := sink.Message{Headers: []sink.Header{
		{Key: HeaderPipeline, Value: []byte(pipeline)},
		{Key: HeaderSource, Value: []byte(source)},
		{Key: HeaderURL, Value: long},
		{Key: HeaderError, Value: long},
		{Key: HeaderField, Value: long},
		{Key: HeaderPage, Value: []byte("-9223372036854775808")},
		{Key: HeaderIndex, Value: []byte("-9223372036854775808")},
		{Key: HeaderFailedAt, Value: make([]byte, maxTimeHeader)},
		{Key: HeaderTruncated, Value: []byte("true")},
		{Key: HeaderOriginalBytes, Value: []byte("-9223372036854775808")},
	}}
	return sink.Size(&m)
}

// fit cuts dead letter m to at most limit bytes: its value (the original JSON, kept as its
// start), then, only if key and headers alone are over the limit, its key, then its variable
// headers to maxHeaderValue bytes each. A cut dead letter says so in HeaderTruncated and
// HeaderOriginalBytes. newSizeLimits made sure the topics take a dead letter cut that far.
func fit(m *sink.Message, limit int) {
	if sink.Size(m) <= limit {
		return
	}
	value := m.Value
	m.Headers = append(m.Headers,
		sink.Header{Key: HeaderTruncated, Value: []byte("true")},
		sink.Header{Key: HeaderOriginalBytes, Value: []byte(strconv.Itoa(len(value)))})
	m.Value = value[:0]
	if sink.Size(m) > limit {
		m.Key = nil
	}
	for i := range m.Headers {
		if sink.Size(m) <= limit {
			break
		}
		switch m.Headers[i].Key {
		case HeaderURL, HeaderError, HeaderField:
			m.Headers[i].Value = cutUTF8(m.Headers[i].Value, maxHeaderValue)
		}
	}
	// Every byte of value counts one byte in sink.Size: keep as much of it as fits.
	m.Value = value[:max(min(limit-sink.Size(m), len(value)), 0)]
}

// cutUTF8 returns at most n bytes of b, not splitting a UTF-8 sequence.
func cutUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}
