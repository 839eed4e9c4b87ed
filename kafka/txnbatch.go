package kafka

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/keysetsync/keysetsync/sink"
)

// Offsets into the bytes protocol.RecordSet.WriteTo renders for a v2 record batch: a 4-byte
// size prefix (the RECORDS field's length, which RawProduce sends as is), then the batch
// header of the Kafka protocol (baseOffset int64, batchLength int32, partitionLeaderEpoch
// int32, magic int8, crc uint32, attributes int16, lastOffsetDelta int32, firstTimestamp
// int64, maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence int32,
// records count int32). kafka-go writes producer id, epoch and base sequence as -1 with no
// way to set them, so they are patched in here, and the CRC-32C, which covers everything from
// the attributes to the end, is computed again.
const (
	txnPrefix          = 4
	txnOffMagic        = txnPrefix + 16
	txnOffCRC          = txnPrefix + 17
	txnOffAttributes   = txnPrefix + 21
	txnOffProducerID   = txnPrefix + 43
	txnOffEpoch        = txnPrefix + 51
	txnOffBaseSequence = txnPrefix + 53
	txnOffCount        = txnPrefix + 57
	txnHeaderLen       = txnPrefix + 61
)

var txnCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// txnBatchIdentity is what a transactional batch carries besides its records.
type txnBatchIdentity struct {
	producerID   int64
	epoch        int16
	baseSequence int32
}

// txnEncodeBatch renders msgs as one transactional v2 record batch, uncompressed, as the
// bytes of a RawProduce request's record set.
func txnEncodeBatch(msgs []sink.Message, id txnBatchIdentity, now time.Time) ([]byte, error) {
	records := make([]protocol.Record, len(msgs))
	for i, m := range msgs {
		r := protocol.Record{Time: now, Key: protocol.NewBytes(m.Key), Value: protocol.NewBytes(m.Value)}
		if len(m.Headers) > 0 {
			r.Headers = make([]protocol.Header, len(m.Headers))
			for j, h := range m.Headers {
				r.Headers[j] = protocol.Header{Key: h.Key, Value: h.Value}
			}
		}
		records[i] = r
	}
	rs := protocol.RecordSet{Version: 2, Attributes: protocol.Transactional, Records: protocol.NewRecordReader(records...)}
	// Sized once: sink.Size never undercounts a record's v2 encoding (txnSplit relies on it), so
	// the batch fits without the buffer doubling its way up from nothing, which copied and
	// cleared about twice the batch per batch (the largest allocation of a sync after the pages).
	var buf bytes.Buffer
	buf.Grow(txnBatchSizeBound(msgs))
	if _, err := rs.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encode record batch of %d records: %w", len(msgs), err)
	}
	b := buf.Bytes()
	if err := txnPatchBatch(b, id); err != nil {
		return nil, err
	}
	return b, nil
}

// txnBatchSizeBound is at least the bytes txnEncodeBatch renders for msgs: the size prefix,
// the batch header and each record as sink.Size counts it.
func txnBatchSizeBound(msgs []sink.Message) int {
	n := txnPrefix + sink.RecordBatchOverhead
	for i := range msgs {
		n += sink.Size(&msgs[i])
	}
	return n
}

// txnPatchBatch writes the producer id, epoch and base sequence into a batch rendered by
// kafka-go and recomputes its CRC. It checks the layout first, so that a kafka-go that
// renders batches differently fails loudly instead of sending garbage.
func txnPatchBatch(b []byte, id txnBatchIdentity) error {
	if len(b) < txnHeaderLen || b[txnOffMagic] != 2 {
		return fmt.Errorf("record batch layout not v2 as expected (%d bytes)", len(b))
	}
	if int(binary.BigEndian.Uint32(b)) != len(b)-txnPrefix {
		return fmt.Errorf("record batch size prefix %d does not match its %d bytes", binary.BigEndian.Uint32(b), len(b)-txnPrefix)
	}
	if int64(binary.BigEndian.Uint64(b[txnOffProducerID:])) != -1 || crc32.Checksum(b[txnOffAttributes:], txnCastagnoli) != binary.BigEndian.Uint32(b[txnOffCRC:]) {
		return fmt.Errorf("record batch header not as kafka-go renders it (producer id or CRC unexpected)")
	}
	binary.BigEndian.PutUint64(b[txnOffProducerID:], uint64(id.producerID))
	binary.BigEndian.PutUint16(b[txnOffEpoch:], uint16(id.epoch))
	binary.BigEndian.PutUint32(b[txnOffBaseSequence:], uint32(id.baseSequence))
	binary.BigEndian.PutUint32(b[txnOffCRC:], crc32.Checksum(b[txnOffAttributes:], txnCastagnoli))
	return nil
}

// txnNextSequence is seq advanced by n records. Sequences are int32 and wrap to 0 after
// MaxInt32, as the broker's (ProducerStateEntry / DefaultRecordBatch.incrementSequence).
func txnNextSequence(seq int32, n int) int32 {
	next := int64(seq) + int64(n)
	if next > math.MaxInt32 {
		next -= math.MaxInt32 + 1
	}
	return int32(next)
}

// txnSplit cuts a partition's msgs into record batches that the broker accepts: each batch's
// records plus sink.RecordBatchOverhead within maxMessageBytes (the topic's max.message.bytes;
// 0: the broker's default). Kafka takes one batch per partition in a produce request and
// refuses a larger one whole (MESSAGE_TOO_LARGE), so a partition's records of one Produce go
// out as several batches, one after the other. A record is counted as sink.Size, which is
// never less than its v2 encoding here (varint lengths, one timestamp for the batch): the
// count the pipeline sizes its messages with, so a message it let through always fits a batch.
// A message over the limit on its own fails the whole split, before anything is sent.
func txnSplit(tp txnPartition, msgs []sink.Message, maxMessageBytes int) ([][]sink.Message, error) {
	limit := sink.MaxSize(maxMessageBytes)
	var out [][]sink.Message
	start, size := 0, 0
	for i := range msgs {
		s := sink.Size(&msgs[i])
		if s > limit {
			return nil, fmt.Errorf("message %d of %d for %s/%d (key %q) is %d bytes, over the limit of %d (max.message.bytes %d less %d bytes of record batch header): %w",
				i, len(msgs), tp.topic, tp.partition, txnShortKey(msgs[i].Key), s, limit, limit+sink.RecordBatchOverhead, sink.RecordBatchOverhead, kafkago.MessageSizeTooLarge)
		}
		if i > start && size+s > limit {
			out = append(out, msgs[start:i])
			start, size = i, 0
		}
		size += s
	}
	if start < len(msgs) {
		out = append(out, msgs[start:])
	}
	return out, nil
}

// txnShortKey is a key as an error shows it: its first 64 bytes.
func txnShortKey(k []byte) string {
	if len(k) > 64 {
		return string(k[:64]) + "..."
	}
	return string(k)
}
