package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/compare"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/latest"
	"github.com/keysetsync/keysetsync/source"
)

// errVerify marks a verification that found missing or stale ids (exit status 1).
var errVerify = errors.New("topic does not match the API")

const verifySummary = `Compare the data topic's latest value per id with the API's current state, read in full
through the keyset endpoint, and report how far the pipeline's committed cursor is behind the API.
Prints missing, stale and extra ids. Exit status 1 if any id is missing or stale; 3 ("cannot
verify") if the API could not page through a tie wider than a page, so neither the sync nor this
check can read every record.
Takes every flag of once and its --config file (with a pipelines: list, --pipeline selects one),
so the same flags and file serve both; the flags that only concern writing are accepted and
ignored.`

func runVerify(ctx context.Context, e *env, args []string) error {
	var examples int
	var uncommitted bool
	maxExamples := func(p *int) func(*flag.FlagSet) {
		return func(fs *flag.FlagSet) { fs.IntVar(p, "max-examples", 10, "ids printed per kind of difference") }
	}
	readUncommitted := func(p *bool) func(*flag.FlagSet) {
		return func(fs *flag.FlagSet) { registerReadUncommitted(fs, p) }
	}
	fs, f := syncFlagSet(e, "verify", verifySummary, nil, maxExamples(&examples), readUncommitted(&uncommitted))
	p, err := parseFlagSources(e, fs, args)
	if err != nil {
		return err
	}
	if p.config != nil && len(p.config.pipelines) > 0 {
		var ignored int // an item's own max-examples: the command line's is the one printed with
		var ignoredU bool
		sets, err := pipelineFlagSets(e, args, "verify", verifySummary, p.config, false, maxExamples(&ignored), readUncommitted(&ignoredU))
		if err != nil {
			return err
		}
		if f, err = selectPipeline(f.pipeline, p.source["pipeline"] != fromDefault, p.config.path, sets); err != nil {
			return err
		}
	}
	if err := f.validate(); err != nil {
		return err
	}
	log, err := f.logger(e)
	if err != nil {
		return err
	}
	codec, err := avro.NewCodec()
	if err != nil {
		return err
	}
	src, err := f.source.newSource(source.NewTransport(1), f.apiMaxAttempts, log)
	if err != nil {
		return err
	}
	walk, err := f.source.walkOptions()
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	client, err := newKafkaClient(&f.kafkaSec, f.brokers, "keysetsync-verify", log)
	if err != nil {
		return err
	}
	defer client.Close()

	// The cursor, then the topic, then the API, each read after the one it is compared with: a
	// cursor is committed only after its data is acknowledged, so the topic covers it, and an
	// update that lands between the reads shows as stale (the API is newer), never as a false
	// "in sync".
	committed, noCursor, err := loadCommittedCursor(ctx, client, f, log)
	if err != nil {
		return err
	}
	var inTopic latest.Values
	err = client.ScanWith(ctx, f.topic, kafka.ScanOptions{Uncommitted: uncommitted}, func(r kafka.Record) error {
		m := latest.Message{Key: r.Key, Value: r.Value, Partition: r.Partition, Offset: r.Offset}
		if m.Value != nil {
			m.Value = f.registry.unframe(m.Value) // compared with the API's Avro values
		}
		inTopic.Add(m)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read topic %q: %w", f.topic, err)
	}
	w := source.NewWalker(src, codec, cursor.Cursor{}, walk, log)
	inAPI, err := compare.ReadAPI(ctx, w)
	if err != nil {
		return err
	}
	lag := cursorLag(f, committed, noCursor, inAPI)

	if ws := w.Stats(); ws.TieOverflows > 0 {
		// The walk skipped records it could not page through, exactly as the sync does: a
		// comparison would call them neither missing nor stale, and report a loss as success.
		fmt.Fprintf(e.stdout, "cannot verify: %s\n", compare.OverflowText(ws))
		fmt.Fprintln(e.stdout, lag)
		return fmt.Errorf("%w: the API could not page through %d tie(s) wider than a page (first at %s); configure --api-after-id-param or a larger --api-page-size",
			errCannotVerify, ws.TieOverflows, cursor.FormatTime(ws.Overflows[0].At))
	}

	diff := inAPI.Diff(&inTopic)
	counts := inTopic.Counts()
	unkeyed := ""
	if counts.Unkeyed > 0 {
		// Not part of the upsert stream, so in no comparison: but not hidden either.
		unkeyed = fmt.Sprintf(" unkeyed=%d", counts.Unkeyed)
	}
	fmt.Fprintf(e.stdout, "topic=%s messages=%d%s ids_in_topic=%d ids_in_api=%d missing=%d stale=%d extra=%d\n",
		f.topic, counts.Messages, unkeyed, inTopic.Len(), diff.InAPI, len(diff.Missing), len(diff.Stale), len(diff.Extra))
	for _, l := range []struct {
		kind string
		ids  []string
	}{{"missing", diff.Missing}, {"stale", diff.Stale}, {"extra", diff.Extra}} {
		for _, id := range l.ids[:min(len(l.ids), examples)] {
			fmt.Fprintf(e.stdout, "%s %s\n", l.kind, id)
		}
	}
	fmt.Fprintln(e.stdout, lag)
	if !diff.InSync() {
		return fmt.Errorf("%w: %d missing, %d stale", errVerify, len(diff.Missing), len(diff.Stale))
	}
	return nil
}

// selectPipeline picks the pipeline of a config file's pipelines list that verify checks: the
// one named by --pipeline (flag, env var or top-level key), or the only one.
func selectPipeline(name string, named bool, path string, sets []*pipelineFlags) (*syncFlags, error) {
	var names []string
	for _, ps := range sets {
		if named && ps.flags.pipeline == name {
			return ps.flags, nil
		}
		names = append(names, ps.flags.pipeline)
	}
	slices.Sort(names) // the sets come in no fixed order: name them the same way every time
	switch {
	case named:
		return nil, fmt.Errorf("%w: --pipeline %q is not in the pipelines of config file %s (%s)", errUsage, name, path, strings.Join(names, ", "))
	case len(sets) == 1:
		return sets[0].flags, nil
	default:
		return nil, fmt.Errorf("%w: config file %s lists %d pipelines (%s): choose the one to verify with --pipeline", errUsage, path, len(sets), strings.Join(names, ", "))
	}
}

// loadCommittedCursor reads the committed cursor of f.pipeline without creating anything: when
// the cursor topic does not exist or holds no cursor of the pipeline, it returns why as noCursor
// (a report, not an error: a pipeline that never ran is a state worth showing).
func loadCommittedCursor(ctx context.Context, client *kafka.Client, f *syncFlags, log *slog.Logger) (c cursor.Cursor, noCursor string, err error) {
	if _, err := client.Partitions(ctx, f.cursorTopic); errors.Is(err, kafka.ErrUnknownTopic) {
		return cursor.Cursor{}, fmt.Sprintf("cursor topic %q does not exist", f.cursorTopic), nil
	} else if err != nil {
		return cursor.Cursor{}, "", fmt.Errorf("cursor topic %q on %s: %w", f.cursorTopic, f.brokers, err)
	}
	store, err := openCursorStore(ctx, client, f.cursorTopic, 0, log)
	if err != nil {
		return cursor.Cursor{}, "", err
	}
	defer store.Close()
	c, err = store.Load(ctx, f.pipeline)
	if errors.Is(err, cursor.ErrNotFound) {
		return cursor.Cursor{}, fmt.Sprintf("no cursor of pipeline %q in topic %q", f.pipeline, f.cursorTopic), nil
	}
	return c, "", err
}

// cursorLag is verify's line on how far the committed cursor is behind the API: the cursor's
// last_updated_at, the API's newest updatedAt, their difference (negative: the cursor is ahead
// of every record the API serves) and how many API records are newer than the cursor, which the
// next pass would deliver.
func cursorLag(f *syncFlags, c cursor.Cursor, noCursor string, api *compare.API) string {
	at := c.LastUpdatedAt
	if noCursor != "" {
		at = cursor.Start
	}
	lag := api.Lag(at)
	var b strings.Builder
	fmt.Fprintf(&b, "cursor pipeline=%s", f.pipeline)
	if noCursor != "" {
		fmt.Fprintf(&b, " last_updated_at=none (%s: its next pass starts from the beginning)", noCursor)
	} else {
		fmt.Fprintf(&b, " last_updated_at=%s seq=%d", cursor.FormatTime(at), c.Seq)
	}
	if lag.Newest.IsZero() {
		b.WriteString(" api_newest_updated_at=none")
	} else {
		fmt.Fprintf(&b, " api_newest_updated_at=%s", cursor.FormatTime(lag.Newest))
		if noCursor == "" {
			fmt.Fprintf(&b, " behind=%s", lag.Newest.Sub(at))
		}
	}
	fmt.Fprintf(&b, " api_records_newer=%d", lag.Newer)
	return b.String()
}
