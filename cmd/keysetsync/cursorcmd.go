package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/keysetsync/keysetsync/cursor"
)

// cursorActions are the subcommands of `keysetsync cursor`, in the order usage lists them.
var cursorActions = []struct{ name, summary string }{
	{"show", "print the committed cursor of --pipeline as JSON"},
	{"set", "commit a cursor at --to, so the next pass re-reads every record with updatedAt >= --to"},
	{"reset", "commit a cursor at the beginning, so the next pass re-reads everything"},
}

// runCursor shows or moves a pipeline's committed cursor. set and reset commit a normal cursor
// record with the next Seq, never a tombstone, so the topic keeps the history of moves.
func runCursor(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		cursorUsage(e.stderr)
		return fmt.Errorf("%w: missing action: want show, set or reset", errUsage)
	}
	action := args[0]
	switch action {
	case "-h", "--help", "-help", "help":
		cursorUsage(e.stderr)
		return errHelp
	case "show", "set", "reset":
	default:
		cursorUsage(e.stderr)
		return fmt.Errorf("%w: unknown action %q: want show, set or reset", errUsage, action)
	}

	summaries := map[string]string{
		"show": "Print the committed cursor of --pipeline: the JSON value stored in the cursor topic.\nExit status 1 if the pipeline has no committed cursor.",
		"set": "Commit a cursor at --to (Seq + 1, no ids delivered at --to, records_delivered kept), so the\n" +
			"next pass of --pipeline re-reads every record with updatedAt >= --to: a backfill. Stop the\n" +
			"pipeline first (or run this between passes): a pass in progress commits over it. Prints what\n" +
			"it wrote and what it replaced; the replaced cursor stays in the topic until compaction. An\n" +
			"unreadable cursor record is replaced too: the new one (Seq above every readable one) supersedes it.",
		"reset": "Commit a cursor at 0001-01-01T00:00:00Z (Seq + 1, not a tombstone), so the next pass of\n" +
			"--pipeline re-reads the whole source. Stop the pipeline first (or run this between passes):\n" +
			"a pass in progress commits over it. Prints what it wrote and what it replaced, also when that\n" +
			"was an unreadable cursor record (the new one supersedes it).",
	}
	fs := newFlagSet(e, "cursor "+action, summaries[action])
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	cursorTopic := fs.String("cursor-topic", "keysetsync-cursors", "compacted topic holding the cursors (key = pipeline name); created compacted if missing")
	pipeline := fs.String("pipeline", "users", "pipeline whose cursor to "+action)
	var to *string
	if action == "set" {
		to = fs.String("to", "", "new cursor position, an RFC 3339 time; the next pass re-reads every updatedAt >= it (required)")
	}
	var sec kafkaSecurityFlags
	sec.register(fs)
	if err := parseFlags(e, fs, args[1:]); err != nil {
		return err
	}
	errs := sec.validate()
	if *pipeline == "" {
		errs = append(errs, errors.New("--pipeline is empty"))
	}
	if *cursorTopic == "" {
		errs = append(errs, errors.New("--cursor-topic is empty"))
	}
	if len(brokerList(*brokers)) == 0 {
		errs = append(errs, errors.New("--brokers is empty"))
	}
	target := cursor.Start
	if to != nil {
		var err error
		switch target, err = cursor.ParseTime(*to); {
		case *to == "":
			errs = append(errs, errors.New("--to is required: the new position, an RFC 3339 time such as 2024-01-15T10:30:00Z"))
		case err != nil:
			errs = append(errs, fmt.Errorf("--to %q: want an RFC 3339 time such as 2024-01-15T10:30:00Z (fractions allowed, for APIs with sub-second times)", *to))
		case target.After(time.Now()):
			errs = append(errs, fmt.Errorf("--to %s is in the future: records updated until then would never be read", *to))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}

	client, err := newKafkaClient(&sec, *brokers, "keysetsync-cursor", stderrLogger(e))
	if err != nil {
		return err
	}
	defer client.Close()
	store, err := openCursorStore(ctx, client, *cursorTopic, 0, nil)
	if err != nil {
		return fmt.Errorf("open cursor topic %q on %s: %w", *cursorTopic, *brokers, err)
	}
	defer store.Close()

	old, err := store.Load(ctx, *pipeline)
	found := err == nil
	// An unreadable record is what set and reset are the way out of: their cursor lands after it
	// in its partition, which supersedes it, with a Seq above every readable one.
	var corrupt *cursor.CorruptError
	switch {
	case errors.Is(err, cursor.ErrNotFound) && action == "show":
		return fmt.Errorf("%w: its next pass starts from %s", err, cursor.FormatTime(cursor.Start))
	case errors.As(err, &corrupt) && action != "show":
		if corrupt.Readable != nil {
			old, found = *corrupt.Readable, true
		}
	case err != nil && !errors.Is(err, cursor.ErrNotFound):
		return err
	}
	if action == "show" {
		return printCursor(e.stdout, "", old)
	}
	if old.Seq >= cursor.MaxSeq {
		return fmt.Errorf("the cursor of pipeline %q read at %s has seq %d, the largest a cursor may have (2^53): no cursor record can supersede it. Delete it first with a tombstone (key %q, null value; e.g. echo '%s:' | kcat -P -b <broker> -t %s -K: -Z), then run this again",
			*pipeline, old.ReadFrom, old.Seq, *pipeline, *pipeline, *cursorTopic)
	}

	next := cursor.Cursor{
		Pipeline:      *pipeline,
		LastUpdatedAt: target,
		Seq:           old.Seq + 1,
		CommittedAt:   time.Now().UTC(),
		Records:       old.Records,
	}
	if err := store.Commit(ctx, next); err != nil {
		return err
	}
	switch {
	case corrupt != nil:
		if _, err := fmt.Fprintf(e.stdout, "replaced: unreadable cursor record at %s: %v\n", corrupt.At, corrupt.Err); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		if found {
			if err := printCursor(e.stdout, "highest readable: ", old); err != nil {
				return err
			}
		}
	case found:
		if err := printCursor(e.stdout, "replaced: ", old); err != nil {
			return err
		}
	default:
		if _, err := fmt.Fprintf(e.stdout, "replaced: none (pipeline %q had no committed cursor)\n", *pipeline); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	if err := printCursor(e.stdout, "wrote: ", next); err != nil {
		return err
	}
	if found && old.Backfill != nil {
		// The new cursor is a plain position: the next pass walks on from it, and backfills
		// again if it is far behind, with ranges of its own.
		fmt.Fprintf(e.stderr, "dropped the parallel backfill in flight (horizon %s, %d ranges after the cursor's)\n",
			cursor.FormatTime(old.Backfill.Horizon), len(old.Backfill.Ranges))
	}
	if corrupt != nil {
		// The new record supersedes the bad one only in the bad one's partition: make sure the
		// cursor loads now (the cursor topic's partitions may have changed since it was written).
		if _, err := store.Load(ctx, *pipeline); err != nil {
			return fmt.Errorf("wrote a new cursor, but the pipeline's cursor still does not load: %w", err)
		}
	}
	fmt.Fprintf(e.stderr, "cursor of pipeline %q is now %s (seq %d): its next pass reads every record with updatedAt >= it\n",
		*pipeline, cursor.FormatTime(target), next.Seq)
	return nil
}

// printCursor writes prefix and the cursor's JSON (cursor.Marshal) as one line.
func printCursor(w io.Writer, prefix string, c cursor.Cursor) error {
	b, err := cursor.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode cursor of %q: %w", c.Pipeline, err)
	}
	if _, err := fmt.Fprintf(w, "%s%s\n", prefix, b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func cursorUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: keysetsync cursor <action> [flags]\n\nActions:")
	for _, a := range cursorActions {
		fmt.Fprintf(w, "  %-6s %s\n", a.name, a.summary)
	}
	fmt.Fprintln(w, "\nRun 'keysetsync cursor <action> --help' for its flags; each is also read from KEYSETSYNC_<FLAG>.")
}
