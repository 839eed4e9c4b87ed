// Command apidrain measures the API ceiling of keysetsync: it drains a keyset API from the
// beginning with the paginator alone (source.Source + source.Walker: fetch, JSON decode,
// validation, Avro encode, fingerprint) and produces nothing. It prints one JSON line:
//
//	{"records":..,"pages":..,"value_bytes":..,"seconds":..,"records_per_s":..,"mb_per_s":..}
//
// seconds runs from the first request to the end of the last page; MB are 10^6 bytes of Avro
// values. Usage:
//
//	apidrain --api-url http://127.0.0.1:PORT/pagination/keyset [--timeout 10m]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/bench/internal/benchkit"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/source"
)

func main() {
	apiURL := flag.String("api-url", "http://127.0.0.1:5001/pagination/keyset", "keyset endpoint (loopback only)")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole drain")
	expect := flag.Int("expect", 0, "fail unless exactly this many records are read (0: no check)")
	flag.Parse()
	if err := benchkit.LoopbackURL(*apiURL); err != nil {
		benchkit.Fatal("apidrain", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	src, err := source.NewSource(source.SourceConfig{URL: *apiURL})
	if err != nil {
		benchkit.Fatal("apidrain", err)
	}
	codec, err := avro.NewCodec()
	if err != nil {
		benchkit.Fatal("apidrain", err)
	}
	start := time.Now()
	w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{}, nil)
	records, valueBytes := 0, 0
	err = w.Drain(ctx, func(r source.Record) error {
		records, valueBytes = records+1, valueBytes+len(r.Value)
		return nil
	})
	if err != nil {
		benchkit.Fatal("apidrain", err)
	}
	secs := time.Since(start).Seconds()
	st := w.Stats()
	if *expect > 0 && records != *expect {
		benchkit.Fatal("apidrain", fmt.Errorf("read %d records, want %d", records, *expect))
	}
	benchkit.Emit(map[string]any{
		"records": records, "pages": st.Pages, "fetched": st.Fetched, "value_bytes": valueBytes,
		"seconds": secs, "records_per_s": float64(records) / secs, "mb_per_s": float64(valueBytes) / secs / 1e6,
	})
	os.Exit(0)
}
