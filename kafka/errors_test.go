package kafka_test

import (
	"fmt"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/stretchr/testify/assert"

	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/retry"
)

// The wrappings callers put around a Kafka error of a cursor load, of a batch and of a cursor
// commit.
func asCursorLoad(op string, err error) error {
	return fmt.Errorf("load cursor: %w", fmt.Errorf("load cursor of %q: %w", "users", fmt.Errorf("%s of keysetsync-cursors/0: %w", op, err)))
}

func asBatch(err error) error {
	return fmt.Errorf("produce to Kafka failed: batch of 200 records up to updatedAt 2024-01-01T00:28:35Z: %w", err)
}

func asCommit(err error) error {
	return fmt.Errorf("cursor commit failed: batch of 200 records up to updatedAt 2024-01-01T00:28:35Z was acknowledged: %w",
		fmt.Errorf("commit cursor of %q to topic %q: %w", "users", "keysetsync-cursors", err))
}

// TestClassifyDecidesByKafkasCodes covers each form a Kafka error reaches retry.IsRetryable in
// once classified: built by kafka-go's own constructors and wrapped with %w as callers wrap it.
func TestClassifyDecidesByKafkasCodes(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		// Kafka while a broker stops and starts (the broker-restart test saw the first two).
		{"cursor load: fetch while the partition has no leader (kafka-go client-side)",
			asCursorLoad("fetch", fmt.Errorf("kafka.(*Client).Fetch: %w", fetch.NewError(protocol.NewErrNoLeader("keysetsync-cursors", 0)))), true},
		{"cursor load: list offsets answered UNKNOWN_SERVER_ERROR by a starting broker",
			asCursorLoad("list offsets", kafkago.Unknown), true},
		{"batch: produce while the partition has no leader", asBatch(fmt.Errorf("kafka.(*Client).Produce: %w", produce.NewError(protocol.NewErrNoLeader("users", 0)))), true},
		{"batch: topic missing from kafka-go's metadata", asBatch(fmt.Errorf("kafka.(*Client).Produce: %w", protocol.ErrNoTopic)), true},
		{"batch: partition missing from kafka-go's metadata", asBatch(fmt.Errorf("kafka.(*Client).Produce: %w", protocol.ErrNoPartition)), true},
		{"metadata: leader not available", fmt.Errorf("metadata of topic %q: partition 0: %w", "users", kafkago.LeaderNotAvailable), true},
		{"batch: NOT_LEADER_OR_FOLLOWER", asBatch(kafkago.WriteErrors{kafkago.NotLeaderForPartition, nil}), true},
		{"batch: NOT_ENOUGH_REPLICAS", asBatch(kafkago.WriteErrors{kafkago.NotEnoughReplicas}), true},
		{"batch: NOT_ENOUGH_REPLICAS_AFTER_APPEND", asBatch(kafkago.NotEnoughReplicasAfterAppend), true},
		{"batch: REQUEST_TIMED_OUT", asBatch(kafkago.RequestTimedOut), true},
		{"batch: NETWORK_EXCEPTION", asBatch(kafkago.NetworkException), true},
		{"batch: BROKER_NOT_AVAILABLE", asBatch(kafkago.BrokerNotAvailable), true},
		{"batch: REPLICA_NOT_AVAILABLE", asBatch(kafkago.ReplicaNotAvailable), true},
		{"batch: KAFKA_STORAGE_ERROR", asBatch(kafkago.KafkaStorageError), true},
		{"batch: THROTTLING_QUOTA_EXCEEDED", asBatch(kafkago.ThrottlingQuotaExceeded), true},
		{"commit: NOT_COORDINATOR", asCommit(kafkago.NotCoordinatorForGroup), true},
		{"commit: COORDINATOR_NOT_AVAILABLE", asCommit(kafkago.GroupCoordinatorNotAvailable), true},
		{"commit: COORDINATOR_LOAD_IN_PROGRESS", asCommit(kafkago.GroupLoadInProgress), true},
		{"commit: CONCURRENT_TRANSACTIONS", asCommit(kafkago.ConcurrentTransactions), true},
		{"describe configs: NOT_CONTROLLER with the broker's message", fmt.Errorf("describe configs of topic %q: %w", "users", fmt.Errorf("%w: %s", kafkago.NotController, "not the controller")), true},
		{"list offsets: OFFSET_NOT_AVAILABLE after an election", asCursorLoad("list offsets", kafkago.OffsetNotAvailable), true},
		{"fetch: FENCED_LEADER_EPOCH", asCursorLoad("fetch", kafkago.FencedLeaderEpoch), true},

		// Kafka errors that the same request meets again.
		{"batch: POLICY_VIOLATION", asBatch(kafkago.PolicyViolation), false},
		{"batch: MESSAGE_TOO_LARGE", asBatch(kafkago.WriteErrors{kafkago.MessageSizeTooLarge}), false},
		{"batch: one message too large among retriable ones", asBatch(kafkago.WriteErrors{kafkago.NotEnoughReplicas, kafkago.MessageSizeTooLarge}), false},
		{"batch: INVALID_RECORD", asBatch(kafkago.InvalidRecord), false},
		{"batch: CORRUPT_MESSAGE, after kafka-go's own attempts", asBatch(kafkago.InvalidMessage), false},
		{"batch: RECORD_LIST_TOO_LARGE", asBatch(kafkago.RecordListTooLarge), false},
		{"batch: TOPIC_AUTHORIZATION_FAILED", asBatch(kafkago.TopicAuthorizationFailed), false},
		{"commit: CLUSTER_AUTHORIZATION_FAILED", asCommit(kafkago.ClusterAuthorizationFailed), false},
		{"SASL: wrong password, as kafka-go returns it", fmt.Errorf("data topic on %s: metadata of topic %q: kafka.(*Client).Metadata: %w", "b:9094", "users",
			fmt.Errorf("%w: %s", kafkago.SASLAuthenticationFailed, "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512")), false},
		{"SASL: broker closed the exchange (kafka-go turns that EOF into SASL_AUTHENTICATION_FAILED)", fmt.Errorf("kafka.(*Client).Metadata: %w", kafkago.SASLAuthenticationFailed), false},
		{"SASL: mechanism not enabled", fmt.Errorf("kafka.(*Client).Metadata: %w", kafkago.UnsupportedSASLMechanism), false},
		{"create topic: INVALID_REPLICATION_FACTOR", fmt.Errorf("create topic %q: %w", "users", kafkago.InvalidReplicationFactor), false},
		{"create topic: INVALID_CONFIG", fmt.Errorf("create topic %q: %w", "users", kafkago.InvalidConfiguration), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, retry.IsRetryable(kafka.Classify(c.err)), "IsRetryable(Classify(%v))", c.err)
			assert.Equal(t, c.want, retry.IsRetryable(kafka.Classify(kafka.Classify(c.err))), "classified twice")
		})
	}
}
