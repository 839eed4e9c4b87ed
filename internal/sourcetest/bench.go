package sourcetest

import (
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/keysetsync/keysetsync/playground"
)

// Playground is a playground with n records served in-process on loopback, and its keyset URL.
func Playground(b testing.TB, n, pageSize int) (*playground.Server, string) {
	b.Helper()
	return PlaygroundWith(b, playground.Config{Records: n, PageSize: pageSize, Seed: 1})
}

// PlaygroundWith serves a playground of cfg in-process until the benchmark ends.
func PlaygroundWith(b testing.TB, cfg playground.Config) (*playground.Server, string) {
	b.Helper()
	api, err := playground.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	b.Cleanup(srv.Close)
	return api, srv.URL + playground.KeysetPath
}

// Mallocs is the process's malloc count so far.
func Mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// PerRecord reports ns/record, allocs/record and records/s; records is the total over all
// iterations and m the Mallocs read before the loop.
func PerRecord(b *testing.B, records int, m uint64) {
	b.StopTimer()
	after := Mallocs()
	if records == 0 {
		b.Fatal("no records handled")
	}
	n := float64(records)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/record")
	b.ReportMetric(float64(after-m)/n, "allocs/record")
	b.ReportMetric(n/b.Elapsed().Seconds(), "records/s")
}
