package main

import (
	"errors"
	"fmt"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/source"
)

// hints name the flags and commands that get a user out of a library error: the libraries say
// what is wrong in their own terms, the command line adds how to change it here.
var hints = []struct {
	is   error
	hint func(err error) string
}{
	{source.ErrTieOverflow, func(error) string {
		return "--api-after-id-param or a larger --api-page-size; move the cursor back with keysetsync cursor set --to"
	}},
	{cursor.ErrNotCompacted, func(error) string { return "--cursor-topic names the cursor topic" }},
	{cursor.ErrCorrupt, func(err error) string {
		var ce *cursor.CorruptError
		if !errors.As(err, &ce) {
			return "" // a Seq no commit can increase: the error itself says to delete the cursor
		}
		return fmt.Sprintf("keysetsync cursor set --pipeline %s --to <time> (or cursor reset)", ce.Pipeline)
	}},
}

// withHint returns err with the command-line hint of the first library error it wraps, if any;
// errors.Is and errors.As see through it.
func withHint(err error) error {
	if err == nil {
		return nil
	}
	for _, h := range hints {
		if !errors.Is(err, h.is) {
			continue
		}
		if hint := h.hint(err); hint != "" {
			return &hinted{err: err, hint: hint}
		}
		return err
	}
	return err
}

type hinted struct {
	err  error
	hint string
}

// Error puts the hint last: the library's own message ends with what to do, in its terms.
func (h *hinted) Error() string { return h.err.Error() + ": " + h.hint }
func (h *hinted) Unwrap() error { return h.err }
