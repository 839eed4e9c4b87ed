package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/topic"
	"github.com/keysetsync/keysetsync/producer"
)

// errVerify marks a verification that found missing or stale ids (exit status 1).
var errVerify = errors.New("topic does not match the API")

func runVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "verify", "Compare the data topic's latest value per id with the API's current state, read in full\nthrough the keyset endpoint. Prints missing, stale and extra ids; exit status 1 if any id is\nmissing or stale.")
	var source sourceFlags
	source.register(fs)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	topicName := fs.String("topic", "users", "data topic to verify")
	examples := fs.Int("max-examples", 10, "ids printed per kind of difference")
	var lf logFlags
	lf.register(fs)
	var sec kafkaSecurityFlags
	sec.register(fs)
	var reg registryFlags
	reg.registerRead(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if err := errors.Join(append(append(sec.validate(), source.validate()...), reg.validate()...)...); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	log, err := lf.logger(e)
	if err != nil {
		return err
	}
	codec, err := avro.NewCodec()
	if err != nil {
		return err
	}
	src, err := source.newSource(0, log)
	if err != nil {
		return err
	}
	walk, err := source.walkOptions()
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	transport, err := newKafkaTransport(&sec, "keysetsync-verify", log)
	if err != nil {
		return err
	}
	defer transport.CloseIdleConnections()
	client := newKafkaClient(*brokers, transport)

	// The topic first: an update that lands between the two reads then shows as stale (the
	// API is newer), never as a false "in sync".
	inTopic := map[string][]byte{}
	messages := 0
	err = topic.Scan(ctx, client, *topicName, func(r topic.Record) error {
		messages++
		if r.Value == nil {
			delete(inTopic, string(r.Key))
		} else {
			inTopic[string(r.Key)] = reg.unframe(r.Value)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read topic %q: %w", *topicName, err)
	}
	inAPI := map[string]producer.Record{}
	w := producer.NewWalker(src, codec, cursor.Cursor{}, walk, log)
	for {
		recs, err := w.Next(ctx)
		for _, r := range recs {
			inAPI[r.ID] = r
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read API: %w", err)
		}
	}

	var missing, stale, extra []string
	for id, r := range inAPI {
		v, ok := inTopic[id]
		switch {
		case r.Deleted:
			// A delete is in sync when the topic's latest for the id is a tombstone (or nothing).
			if ok {
				stale = append(stale, id)
			} else {
				delete(inAPI, id)
			}
		case !ok:
			missing = append(missing, id)
		case !bytes.Equal(v, r.Value):
			stale = append(stale, id)
		}
	}
	for id := range inTopic {
		if _, ok := inAPI[id]; !ok {
			extra = append(extra, id)
		}
	}
	fmt.Fprintf(e.stdout, "topic=%s messages=%d ids_in_topic=%d ids_in_api=%d missing=%d stale=%d extra=%d tie_overflows=%d\n",
		*topicName, messages, len(inTopic), len(inAPI), len(missing), len(stale), len(extra), w.Stats().TieOverflows)
	for _, l := range []struct {
		kind string
		ids  []string
	}{{"missing", missing}, {"stale", stale}, {"extra", extra}} {
		sort.Strings(l.ids)
		for _, id := range l.ids[:min(len(l.ids), *examples)] {
			fmt.Fprintf(e.stdout, "%s %s\n", l.kind, id)
		}
	}
	if len(missing)+len(stale) > 0 {
		return fmt.Errorf("%w: %d missing, %d stale", errVerify, len(missing), len(stale))
	}
	return nil
}
