package sink

// Sizes of messages as Kafka bounds them. Two limits apply to every message a Kafka sink
// writes, and the smaller is the one really enforced:
//   - kafka-go refuses, for a whole write, a message larger than its writer's BatchBytes,
//     counted as Size counts it;
//   - the broker refuses a record batch larger than the topic's max.message.bytes, and a
//     batch's size is its records plus RecordBatchOverhead.
//
// A Kafka sink sets BatchBytes to MaxSize of the smallest max.message.bytes of the topics it
// writes: the v2 record kafka-go writes for a message is never larger than Size (its lengths are
// varints where Size counts 4 bytes, and the records of a batch share one timestamp), so a batch
// kafka-go fills up to BatchBytes always fits in max.message.bytes. The pipeline sizes the
// messages it makes with the same functions, so that no batch can fail for its size on every
// pass. They live here, beside Message, so the pipeline and the Kafka sink count alike without
// the pipeline knowing Kafka's client.
const (
	// RecordBatchOverhead is the v2 record batch header: base offset, length, leader epoch,
	// magic, CRC, attributes, last offset delta, first and max timestamps, producer id and
	// epoch, base sequence, record count.
	RecordBatchOverhead = 61
	// MessageFraming is what kafka-go (v0.4.51, Message.totalSize) counts for a message besides
	// its key, value and headers: CRC 4, magic 1, attributes 1, key and value lengths 4 each,
	// timestamp 8.
	MessageFraming = 22
	// DefaultMaxMessageBytes is the broker's default message.max.bytes: the max.message.bytes
	// of a topic that does not set its own.
	DefaultMaxMessageBytes = 1048588
)

// VarintLen is the length of n as a zig-zag varint, as kafka-go counts header lengths.
func VarintLen(n int) int {
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

// HeaderSize is what kafka-go counts for one header.
func HeaderSize(key string, value []byte) int {
	return VarintLen(len(key)) + len(key) + VarintLen(len(value)) + len(value)
}

// Size is the size kafka-go gives m: the one its writer compares with BatchBytes.
func Size(m *Message) int {
	n := MessageFraming + len(m.Key) + len(m.Value) + VarintLen(len(m.Headers))
	for _, h := range m.Headers {
		n += HeaderSize(h.Key, h.Value)
	}
	return n
}

// MaxSize is the largest message (Size) that a record batch of a topic with the given
// max.message.bytes carries: its max.message.bytes (0 or less: DefaultMaxMessageBytes) less
// RecordBatchOverhead.
func MaxSize(maxMessageBytes int) int {
	if maxMessageBytes <= 0 {
		maxMessageBytes = DefaultMaxMessageBytes
	}
	return maxMessageBytes - RecordBatchOverhead
}
