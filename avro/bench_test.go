package avro_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/keysetsync/keysetsync/avro"
)

// benchUser looks like a playground user: every optional field set, a multi-line address.
func benchUser() avro.User {
	s := func(v string) *string { return &v }
	created := time.Date(2023, 11, 2, 8, 15, 42, 0, time.UTC)
	return avro.User{
		ID:        "6f1c2c0e-5b7a-4c1e-9a3d-2f8e4b6c1d90",
		Name:      s("Margaret Okonkwo-Lindqvist"),
		Email:     s("margaret.okonkwo-lindqvist@example.org"),
		Address:   s("4821 Willow Creek Parkway\nSuite 310\nNorth Harborview, OR 97401"),
		Company:   s("Brightwater Analytics Group"),
		Job:       s("Senior Data Platform Engineer"),
		CreatedAt: &created,
		UpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC),
	}
}

// perRecord reports ns/record and allocs/record for a benchmark that handles records records
// per iteration; mallocs is runtime.MemStats.Mallocs read just before the loop.
func perRecord(b *testing.B, records int, mallocs uint64) {
	b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	n := float64(b.N) * float64(records)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/record")
	b.ReportMetric(float64(ms.Mallocs-mallocs)/n, "allocs/record")
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// benchEncoded is a codec, benchUser and its encoding, with the benchmark set to report bytes
// and allocations.
func benchEncoded(b *testing.B) (*avro.Codec, avro.User, []byte) {
	c, err := avro.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	u := benchUser()
	buf, err := c.Append(nil, &u)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	return c, u, buf
}

// BenchmarkAppend encodes one User to Avro binary, reusing the buffer as a caller would.
func BenchmarkAppend(b *testing.B) {
	c, u, buf := benchEncoded(b)
	var err error
	m := mallocs()
	b.ResetTimer()
	for b.Loop() {
		if buf, err = c.Append(buf[:0], &u); err != nil {
			b.Fatal(err)
		}
	}
	perRecord(b, 1, m)
	b.ReportMetric(float64(len(buf)), "value-bytes")
}

// BenchmarkDecode decodes one Avro value back into a User.
func BenchmarkDecode(b *testing.B) {
	c, _, buf := benchEncoded(b)
	m := mallocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
	perRecord(b, 1, m)
}
