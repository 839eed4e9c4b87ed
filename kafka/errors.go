package kafka

import (
	"errors"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/keysetsync/keysetsync/retry"
)

// ErrUnknownTopic is Kafka's UNKNOWN_TOPIC_OR_PARTITION: the topic does not exist (or the broker
// that answered does not know it yet). Test for it with errors.Is.
var ErrUnknownTopic error = kafkago.UnknownTopicOrPartition

// isTransient reports whether err carries a Kafka error (kafka: true) and, if so, whether the
// request may succeed when sent again unchanged (transient: true): the cluster is electing a
// leader, moving a partition or coordinator, short of in-sync replicas, loading, throttling, or
// answered a generic server error while it starts. The first Kafka error found in err's tree
// decides; an error without one (kafka: false) is left to the caller's network rules.
//
// The set follows the error codes Kafka itself marks retriable (RetriableException in the Java
// client, kerr's Retriable in franz-go), with three deliberate differences:
//   - UNKNOWN_SERVER_ERROR (-1) is transient. kafka-go's ListOffsets reports any failure of
//     the request to a broker (connection refused, closed, EOF) as this code on each partition
//     (protocol/listoffsets Response.Merge: "UNKNOWN, can we do better?"): that is the
//     "list offsets: [-1] Unknown" of a cursor load while a broker restarts. A broker that
//     answers it for good fails the caller's retries once their budget is spent, with the error.
//   - CONCURRENT_TRANSACTIONS (51) is transient (KIP-890): the previous transaction is ending.
//   - CORRUPT_MESSAGE (2) is not: kafka-go's writer has already retried it, and what persists
//     (a record the broker's validation refuses) fails the same way every time.
//
// kafka-go's own client-side errors for a partition or topic missing from its metadata cache
// (protocol.ErrNoLeader, ErrNoPartition, ErrNoTopic) are transient too: a Fetch or Produce is
// routed by the cached metadata, and while a broker is stopped that metadata has no leader, so
// the request fails with "fetch request error: topic partition has no leader"
// (protocol/fetch Request.Broker) until a refresh finds the broker back. keysetsync creates its
// topics before it uses them.
//
// Authentication and authorization failures (SASL_AUTHENTICATION_FAILED, *_AUTHORIZATION_FAILED),
// policy violations, invalid requests, configs or records, and sizes over a limit are not
// transient: they fail the same way until someone changes something.
func isTransient(err error) (transient, kafkaErr bool) {
	var ke kafkago.Error
	if errors.As(err, &ke) {
		return transientCodes[ke], true
	}
	var pe protocol.Error
	if errors.As(err, &pe) {
		switch pe {
		case protocol.ErrNoLeader, protocol.ErrNoPartition, protocol.ErrNoTopic:
			return true, true
		}
		return false, true
	}
	return false, false
}

var transientCodes = map[kafkago.Error]bool{
	kafkago.Unknown:                      true, // -1, see isTransient
	kafkago.UnknownTopicOrPartition:      true, // 3: metadata not yet propagated
	kafkago.LeaderNotAvailable:           true, // 5
	kafkago.NotLeaderForPartition:        true, // 6 NOT_LEADER_OR_FOLLOWER
	kafkago.RequestTimedOut:              true, // 7
	kafkago.BrokerNotAvailable:           true, // 8
	kafkago.ReplicaNotAvailable:          true, // 9
	kafkago.NetworkException:             true, // 13
	kafkago.GroupLoadInProgress:          true, // 14 COORDINATOR_LOAD_IN_PROGRESS
	kafkago.GroupCoordinatorNotAvailable: true, // 15 COORDINATOR_NOT_AVAILABLE
	kafkago.NotCoordinatorForGroup:       true, // 16 NOT_COORDINATOR
	kafkago.NotEnoughReplicas:            true, // 19
	kafkago.NotEnoughReplicasAfterAppend: true, // 20
	kafkago.NotController:                true, // 41
	kafkago.ConcurrentTransactions:       true, // 51, see isTransient
	kafkago.KafkaStorageError:            true, // 56: a log directory went offline; the leader moves
	kafkago.FetchSessionIDNotFound:       true, // 70
	kafkago.InvalidFetchSessionEpoch:     true, // 71
	kafkago.ListenerNotFound:             true, // 72: metadata of a restarting broker
	kafkago.FencedLeaderEpoch:            true, // 74
	kafkago.UnknownLeaderEpoch:           true, // 75
	kafkago.OffsetNotAvailable:           true, // 78: high watermark not caught up after an election
	kafkago.PreferredLeaderNotAvailable:  true, // 80
	kafkago.EligibleLeadersNotAvailable:  true, // 83
	kafkago.UnstableOffsetCommit:         true, // 88
	kafkago.ThrottlingQuotaExceeded:      true, // 89
	kafkago.UnknownTopicID:               true, // 100
	kafkago.InconsistentTopicID:          true, // 103
	kafkago.FetchSessionTopicIDError:     true, // 106
}

// Classify returns err such that retry.IsRetryable decides it by Kafka's rules where it carries
// a Kafka error (see isTransient): wrapped in an error that says whether it is retryable. kafka-go's
// WriteErrors holds one error per message, not reachable by errors.As: each decides, and all
// must be retryable. An error without a Kafka error, or already classified, is returned as it
// is. Every error this package returns has been through Classify.
func Classify(err error) error {
	var done *classified
	if err == nil || errors.As(err, &done) {
		return err
	}
	var we kafkago.WriteErrors
	if errors.As(err, &we) {
		n, ok := 0, true
		for _, e := range we {
			if e != nil {
				ok = ok && retry.IsRetryable(Classify(e))
				n++
			}
		}
		return &classified{err: err, retryable: ok && n > 0}
	}
	if transient, isKafka := isTransient(err); isKafka {
		return &classified{err: err, retryable: transient}
	}
	return err
}

// classified is a Kafka error with its verdict.
type classified struct {
	err       error
	retryable bool
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() error   { return e.err }
func (e *classified) Retryable() bool { return e.retryable }
