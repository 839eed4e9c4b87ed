package pipeline

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/keysetsync/keysetsync/source"
	"github.com/segmentio/kafka-go"
)

// Sizes of Kafka messages. Two limits apply to every message the pipeline writes, and the smaller
// is the one really enforced:
//   - kafka-go refuses, for the whole WriteMessages call, a message larger than the writer's
//     BatchBytes, counted as messageSize does;
//   - the broker refuses a record batch larger than the topic's max.message.bytes, and a
//     batch's size is its records plus recordBatchOverhead.
//
// The pipeline sets BatchBytes to the smallest max.message.bytes of the topics it writes less
// recordBatchOverhead: the v2 record kafka-go writes for a message is never larger than
// messageSize (its lengths are varints where messageSize counts 4 bytes, and the records of a
// batch share one timestamp), so a batch kafka-go fills up to BatchBytes always fits in
// max.message.bytes. A record whose message would be larger is invalid before it is produced
// (Pipeline.fits), and a dead letter is cut to fit (Pipeline.deadLetter), so no batch can fail for
// its size on every pass.
const (
	// DefaultMaxRecordBytes is the largest data message accepted when Walk.MaxRecordBytes is 0.
	DefaultMaxRecordBytes = 1_000_000
	// recordBatchOverhead is the v2 record batch header: base offset, length, leader epoch,
	// magic, CRC, attributes, last offset delta, first and max timestamps, producer id and
	// epoch, base sequence, record count.
	recordBatchOverhead = 61
	// messageFraming is what kafka-go (v0.4.51, Message.totalSize) counts for a message besides
	// its key, value and headers: CRC 4, magic 1, attributes 1, key and value lengths 4 each,
	// timestamp 8.
	messageFraming = 22
	// maxTimeHeader bounds the length of the keysetsync.updated_at header's value (RFC 3339,
	// UTC, nanoseconds, a year of up to 5 digits or a sign) and its varint length.
	maxTimeHeader = 32 + 1
	// maxHeaderValue is what a dead letter's variable headers (request, error, field) are cut
	// to when even its key and value gone it would not fit: deadLetterFloor.
	maxHeaderValue = 1024
)

// varintLen is the length of n as a zig-zag varint, as kafka-go counts header lengths.
func varintLen(n int) int {
	u := uint64(n) << 1
	if n < 0 {
		u = ^u
	}
	l := 1
	for ; u >= 0x80; u >>= 7 {
		l++
	}
	return l
}

// headerSize is what kafka-go counts for one header.
func headerSize(key string, value []byte) int {
	return varintLen(len(key)) + len(key) + varintLen(len(value)) + len(value)
}

// messageSize is the size kafka-go gives m: the one its writer compares with BatchBytes.
func messageSize(m *kafka.Message) int {
	n := messageFraming + len(m.Key) + len(m.Value) + varintLen(len(m.Headers))
	for _, h := range m.Headers {
		n += headerSize(h.Key, h.Value)
	}
	return n
}

// sizeLimits are the limits a Pipeline derived from its Config.
type sizeLimits struct {
	batchBytes int    // the writer's BatchBytes, and the largest dead letter
	record     int    // the largest data message: the smaller of batchBytes and MaxRecordBytes
	why        string // how record was derived, for the error of a record over it
	fixedData  int    // what every data message counts besides key, value and updated_at
}

// newSizeLimits derives the limits of cfg, or says why the topics cannot take keysetsync's
// messages.
func newSizeLimits(cfg *Config, source string) (sizeLimits, error) {
	topicMax := cfg.TopicMaxMessageBytes
	if topicMax <= 0 {
		topicMax = defaultBrokerMaxMessageBytes
	}
	userMax := cfg.Walk.MaxRecordBytes
	if userMax <= 0 {
		userMax = DefaultMaxRecordBytes
	}
	l := sizeLimits{batchBytes: topicMax - recordBatchOverhead}
	from := fmt.Sprintf("topic %q accepts %d (its max.message.bytes %d less %d bytes of record batch header)", cfg.Topic, l.batchBytes, topicMax, recordBatchOverhead)
	if cfg.DLQTopic != "" {
		dlqMax := cfg.DLQMaxMessageBytes
		if dlqMax <= 0 {
			dlqMax = defaultBrokerMaxMessageBytes
		}
		if dlqMax-recordBatchOverhead < l.batchBytes {
			// One writer writes both topics, and its BatchBytes applies to every message.
			l.batchBytes = dlqMax - recordBatchOverhead
			from = fmt.Sprintf("the dead-letter topic %q accepts %d (its max.message.bytes %d less %d bytes of record batch header; one writer writes both topics)", cfg.DLQTopic, l.batchBytes, dlqMax, recordBatchOverhead)
		}
	}
	l.record = min(userMax, l.batchBytes)
	l.why = fmt.Sprintf("the smaller of --max-record-bytes %d and what %s", userMax, from)
	l.fixedData = varintLen(3) + headerSize(HeaderPipeline, []byte(cfg.Pipeline)) + headerSize(HeaderSource, []byte(source)) +
		varintLen(len(HeaderUpdatedAt)) + len(HeaderUpdatedAt)
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

// defaultBrokerMaxMessageBytes is max.message.bytes when the Config does not say (the broker's
// default message.max.bytes).
const defaultBrokerMaxMessageBytes = 1048588

// dataSize is the size of the data message of r, as Pipeline.message makes it.
func (s *Pipeline) dataSize(r *source.Record, timeLen int) int {
	value := 0
	if !r.Deleted {
		value = len(s.cfg.ValuePrefix) + len(r.Value)
	}
	return messageFraming + len(r.ID) + value + s.limits.fixedData + varintLen(timeLen) + timeLen
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
	m := kafka.Message{Headers: []kafka.Header{
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
	return messageSize(&m)
}

// fit cuts dead letter m to at most limit bytes: its value (the original JSON, kept as its
// start), then, only if key and headers alone are over the limit, its key, then its variable
// headers to maxHeaderValue bytes each. A cut dead letter says so in HeaderTruncated and
// HeaderOriginalBytes. newSizeLimits made sure the topics take a dead letter cut that far.
func fit(m *kafka.Message, limit int) {
	if messageSize(m) <= limit {
		return
	}
	value := m.Value
	m.Headers = append(m.Headers,
		kafka.Header{Key: HeaderTruncated, Value: []byte("true")},
		kafka.Header{Key: HeaderOriginalBytes, Value: []byte(strconv.Itoa(len(value)))})
	m.Value = value[:0]
	if messageSize(m) > limit {
		m.Key = nil
	}
	for i := range m.Headers {
		if messageSize(m) <= limit {
			break
		}
		switch m.Headers[i].Key {
		case HeaderURL, HeaderError, HeaderField:
			m.Headers[i].Value = cutUTF8(m.Headers[i].Value, maxHeaderValue)
		}
	}
	// Every byte of value counts one byte in messageSize: keep as much of it as fits.
	m.Value = value[:max(min(limit-messageSize(m), len(value)), 0)]
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
