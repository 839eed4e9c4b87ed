package avro_test

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/linkedin/goavro/v2"

	"github.com/keysetsync/keysetsync/avro"
)

// BenchmarkSchemaAppend encodes one record per iteration, reusing the buffer as the sync does:
// a playground user with the generic encoder (--schema user.avsc), with the hand-written
// Codec.Append, and with goavro from its native form (what encoding through goavro would cost);
// then the rich order record of the golden test.
func BenchmarkSchemaAppend(b *testing.B) {
	user := benchUser()
	userJSON := decodeJSON(b, `{"id":"6f1c2c0e-5b7a-4c1e-9a3d-2f8e4b6c1d90","name":"Margaret Okonkwo-Lindqvist",
		"email":"margaret.okonkwo-lindqvist@example.org","address":"4821 Willow Creek Parkway\nSuite 310\nNorth Harborview, OR 97401",
		"company":"Brightwater Analytics Group","job":"Senior Data Platform Engineer",
		"createdAt":"2023-11-02T08:15:42Z","updatedAt":"2024-01-15T10:30:00Z"}`)
	codec, err := avro.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	userSchema := parse(b, avro.UserSchema())
	goavroCodec, err := goavro.NewCodec(avro.UserSchema())
	if err != nil {
		b.Fatal(err)
	}
	userBytes, err := codec.Append(nil, &user)
	if err != nil {
		b.Fatal(err)
	}
	userNative, err := userSchema.Decode(userBytes)
	if err != nil {
		b.Fatal(err)
	}
	order := parse(b, readFile(b, filepath.Join("testdata", "custom", "order.avsc")))
	orderJSON := decodeJSON(b, readFile(b, filepath.Join("testdata", "custom", "order-full.json")))

	b.Run("user/generic", func(b *testing.B) {
		benchRecords(b, func(buf []byte) ([]byte, error) { return userSchema.Append(buf, userJSON, avro.MapOptions{}) })
	})
	b.Run("user/handwritten", func(b *testing.B) {
		benchRecords(b, func(buf []byte) ([]byte, error) { return codec.Append(buf, &user) })
	})
	b.Run("user/goavro", func(b *testing.B) {
		benchRecords(b, func(buf []byte) ([]byte, error) { return goavroCodec.BinaryFromNative(buf, userNative) })
	})
	b.Run("order/generic", func(b *testing.B) {
		benchRecords(b, func(buf []byte) ([]byte, error) { return order.Append(buf, orderJSON, avro.MapOptions{}) })
	})
}

func benchRecords(b *testing.B, appendOne func([]byte) ([]byte, error)) {
	buf, err := appendOne(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		if buf, err = appendOne(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N), "allocs/record")
}
