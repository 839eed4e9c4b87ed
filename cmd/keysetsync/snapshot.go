package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/latest"
)

func runSnapshot(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "snapshot", "Rebuild the latest state per id from the whole data topic (the latest value of each key wins,\n"+
		"a tombstone deletes it) and write it sorted by id, as JSON lines (one value object per line)\n"+
		"or CSV with a header row. A summary goes to stderr.")
	var rf topicReadFlags
	rf.register(fs)
	format := fs.String("format", "jsonl", "output format: jsonl, or csv with a header row of the schema's top-level fields")
	output := fs.String("output", "", "file to write, replaced only once complete (default: stdout)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	errs := rf.validate()
	if *format != "jsonl" && *format != "csv" {
		errs = append(errs, fmt.Errorf("--format %q: want jsonl or csv", *format))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	dec, err := rf.decoder()
	if err != nil {
		return err
	}
	client, err := rf.client(e, "keysetsync-snapshot")
	if err != nil {
		return err
	}
	defer client.Close()

	var values latest.Values
	err = client.ScanWith(ctx, rf.topic, kafka.ScanOptions{Uncommitted: rf.uncommitted}, func(r kafka.Record) error {
		values.Add(latest.Message{Key: r.Key, Value: r.Value, Partition: r.Partition, Offset: r.Offset})
		return nil
	})
	if err != nil {
		return fmt.Errorf("read topic %q on %s: %w", rf.topic, rf.brokers, err)
	}

	write := func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<16)
		var enc *json.Encoder
		var cw *csv.Writer
		if *format == "csv" {
			cw = csv.NewWriter(bw)
			if err := cw.Write(dec.columns); err != nil {
				return err
			}
		} else {
			enc = json.NewEncoder(bw)
			enc.SetEscapeHTML(false)
		}
		for _, id := range values.Keys() {
			v, _ := values.Get(id)
			j, err := dec.decode(v.Bytes)
			if err != nil {
				return fmt.Errorf("latest value of id %q (%s/%d offset %d) as %s: %w", id, rf.topic, v.Partition, v.Offset, dec.name(), err)
			}
			if cw != nil {
				var row []string
				if row, err = dec.row(j); err == nil {
					err = cw.Write(row)
				}
			} else {
				err = enc.Encode(j)
			}
			if err != nil {
				return err
			}
		}
		if cw != nil {
			if cw.Flush(); cw.Error() != nil {
				return cw.Error()
			}
		}
		return bw.Flush()
	}
	dest := "stdout"
	if *output == "" {
		if err := write(e.stdout); err != nil {
			return fmt.Errorf("write snapshot: %w", err)
		}
	} else {
		dest = *output
		if err := writeFileAtomic(*output, write); err != nil {
			return fmt.Errorf("write snapshot to %s: %w", *output, err)
		}
	}
	counts := values.Counts()
	fmt.Fprintf(e.stderr, "snapshot: topic=%s messages=%d tombstones=%d unkeyed=%d ids=%d format=%s output=%s\n",
		rf.topic, counts.Messages, counts.Tombstones, counts.Unkeyed, values.Len(), *format, dest)
	return nil
}

// writeFileAtomic writes name through a temporary file in the same directory, renamed over name
// only when write succeeded, so a failed snapshot never leaves a truncated file behind.
func writeFileAtomic(name string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
