package pipeline

import (
	"errors"

	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// Every error a pass returns wraps one of these sentinels or one of the source package's, so
// callers can decide with errors.Is what happened and IsRetryable whether trying again can help.
var (
	// ErrConfig: the pipeline or its source was configured in a way that would break its
	// guarantees. Returned by New (and source.New).
	ErrConfig = source.ErrConfig
	// ErrProduce: Kafka did not acknowledge every message of a batch; no cursor was committed
	// for it. Some messages may have been written: they are sent again by the next pass.
	ErrProduce = errors.New("produce to Kafka failed")
	// ErrCommit: the batch was acknowledged but its cursor could not be committed; the next
	// pass re-sends the batch (duplicates, never a loss).
	ErrCommit = errors.New("cursor commit failed")
	// ErrFenced: the Sink was fenced, another instance of the pipeline with the same
	// transactional id took over (Config.ExactlyOnce with kafka.TxnSink). It is final:
	// IsRetryable refuses it; this instance must stop. It is sink.ErrFenced (and
	// kafka.ErrFenced).
	ErrFenced = sink.ErrFenced
)
