package pipeline

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// sink.Size is kafka-go's count of a message: kafka.TestSizeIsKafkaGosCount.

// TestDataSizeIsTheMessagesSize: the size fits checks before a record is produced is the size
// of the message the pipeline then makes of it.
func TestDataSizeIsTheMessagesSize(t *testing.T) {
	src, err := source.NewSource(source.SourceConfig{URL: "http://user@127.0.0.1:1/pagination/keyset?tenant=acme"})
	require.NoError(t, err)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	for _, prefix := range [][]byte{nil, {0, 0, 0, 0, 7}} {
		s, err := New(Config{Pipeline: "a-pipeline", Source: src, Topic: "t", Store: cursor.NewMemStore(), Codec: codec, ValuePrefix: prefix,
			Sink: sink.NewMem(nil)})
		require.NoError(t, err)
		for _, r := range []source.Record{
			{ID: "a", UpdatedAt: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Value: make([]byte, 100)},
			{ID: strings.Repeat("x", 300), UpdatedAt: time.Date(2024, 1, 1, 0, 0, 0, 123456789, time.UTC), Value: make([]byte, 20000)},
			{ID: "deleted", UpdatedAt: time.Date(2024, 1, 1, 0, 0, 0, 5000000, time.FixedZone("x", 3600)), Deleted: true},
			{ID: "far", UpdatedAt: time.Date(99999, 12, 31, 23, 59, 59, 999999999, time.UTC), Value: []byte{1}},
		} {
			m := s.message(r)
			n := len(r.UpdatedAt.UTC().AppendFormat(nil, time.RFC3339Nano))
			assert.Equal(t, sink.Size(&m), s.dataSize(&r, n), "record %q, prefix %v", r.ID, prefix)
			assert.LessOrEqual(t, n, maxTimeHeader-1, "maxTimeHeader bounds the updated_at header")
		}
	}
}

// TestDeadLetterIsCutToFit: a dead letter larger than the limit is cut to fit it, value first,
// and says so with its original size.
func TestDeadLetterIsCutToFit(t *testing.T) {
	headers := func(errText string) []sink.Header {
		return []sink.Header{{Key: HeaderPipeline, Value: []byte("p")}, {Key: HeaderSource, Value: []byte("http://api/k")},
			{Key: HeaderURL, Value: []byte("http://api/k?updated_since=x")}, {Key: HeaderError, Value: []byte(errText)},
			{Key: HeaderField, Value: nil}, {Key: HeaderPage, Value: []byte("1")}, {Key: HeaderIndex, Value: []byte("1")},
			{Key: HeaderFailedAt, Value: []byte("2025-01-01T00:00:00.123Z")}}
	}
	cases := []struct {
		name      string
		key       string
		value     int
		errText   string
		limit     int
		truncated bool
		keepKey   bool
	}{
		{name: "fits", key: "id", value: 1000, errText: "e", limit: 20000, keepKey: true},
		{name: "value cut", key: "id", value: 30000, errText: "e", limit: 20000, truncated: true, keepKey: true},
		{name: "key dropped, some value kept", key: strings.Repeat("k", 25000), value: 30000, errText: "e", limit: 20000, truncated: true},
		{name: "headers cut", key: "id", value: 10, errText: strings.Repeat("é", 15000), limit: 20000, truncated: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := []byte(`{"id":"` + strings.Repeat("x", c.value) + `"}`)
			m := sink.Message{Key: []byte(c.key), Value: raw, Headers: headers(c.errText)}
			fit(&m, c.limit)
			assert.LessOrEqual(t, sink.Size(&m), c.limit)
			assert.Equal(t, c.keepKey, string(m.Key) == c.key)
			assert.True(t, strings.HasPrefix(string(raw), string(m.Value)), "the value is the start of the original JSON")
			got := map[string]string{}
			for _, h := range m.Headers {
				got[h.Key] = string(h.Value)
			}
			if !c.truncated {
				assert.Equal(t, raw, m.Value)
				assert.NotContains(t, got, HeaderTruncated)
				return
			}
			assert.Equal(t, "true", got[HeaderTruncated])
			assert.Equal(t, strconv.Itoa(len(raw)), got[HeaderOriginalBytes])
			if c.keepKey {
				assert.Equal(t, c.limit, sink.Size(&m), "cut no more than needed")
			}
			assert.True(t, strings.HasPrefix(c.errText, got[HeaderError]) && strings.ToValidUTF8(got[HeaderError], "?") == got[HeaderError], "the error is cut at a character")
		})
	}
}
