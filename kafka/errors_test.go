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

// wrapped is err inside two layers of %w, as callers wrap what this package returns.
func wrapped(err error) error {
	return fmt.Errorf("load cursor of %q: %w", "users", fmt.Errorf("batch of 200 records: %w", err))
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
			wrapped(fmt.Errorf("kafka.(*Client).Fetch: %w", fetch.NewError(protocol.NewErrNoLeader("keysetsync-cursors", 0)))), true},
		{"cursor load: list offsets answered UNKNOWN_SERVER_ERROR by a starting broker",
			wrapped(kafkago.Unknown), true},
		{"batch: produce while the partition has no leader", wrapped(fmt.Errorf("kafka.(*Client).Produce: %w", produce.NewError(protocol.NewErrNoLeader("users", 0)))), true},
		{"batch: topic missing from kafka-go's metadata", wrapped(fmt.Errorf("kafka.(*Client).Produce: %w", protocol.ErrNoTopic)), true},
		{"batch: partition missing from kafka-go's metadata", wrapped(fmt.Errorf("kafka.(*Client).Produce: %w", protocol.ErrNoPartition)), true},
		{"metadata: leader not available", fmt.Errorf("metadata of topic %q: partition 0: %w", "users", kafkago.LeaderNotAvailable), true},
		{"batch: NOT_LEADER_OR_FOLLOWER", wrapped(kafkago.WriteErrors{kafkago.NotLeaderForPartition, nil}), true},
		{"batch: NOT_ENOUGH_REPLICAS", wrapped(kafkago.WriteErrors{kafkago.NotEnoughReplicas}), true},
		{"batch: NOT_ENOUGH_REPLICAS_AFTER_APPEND", wrapped(kafkago.NotEnoughReplicasAfterAppend), true},
		{"batch: REQUEST_TIMED_OUT", wrapped(kafkago.RequestTimedOut), true},
		{"batch: NETWORK_EXCEPTION", wrapped(kafkago.NetworkException), true},
		{"batch: BROKER_NOT_AVAILABLE", wrapped(kafkago.BrokerNotAvailable), true},
		{"batch: REPLICA_NOT_AVAILABLE", wrapped(kafkago.ReplicaNotAvailable), true},
		{"batch: KAFKA_STORAGE_ERROR", wrapped(kafkago.KafkaStorageError), true},
		{"batch: THROTTLING_QUOTA_EXCEEDED", wrapped(kafkago.ThrottlingQuotaExceeded), true},
		{"commit: NOT_COORDINATOR", wrapped(kafkago.NotCoordinatorForGroup), true},
		{"commit: COORDINATOR_NOT_AVAILABLE", wrapped(kafkago.GroupCoordinatorNotAvailable), true},
		{"commit: COORDINATOR_LOAD_IN_PROGRESS", wrapped(kafkago.GroupLoadInProgress), true},
		{"commit: CONCURRENT_TRANSACTIONS", wrapped(kafkago.ConcurrentTransactions), true},
		{"describe configs: NOT_CONTROLLER with the broker's message", fmt.Errorf("describe configs of topic %q: %w", "users", fmt.Errorf("%w: %s", kafkago.NotController, "not the controller")), true},
		{"list offsets: OFFSET_NOT_AVAILABLE after an election", wrapped(kafkago.OffsetNotAvailable), true},
		{"fetch: FENCED_LEADER_EPOCH", wrapped(kafkago.FencedLeaderEpoch), true},

		// Kafka errors that the same request meets again.
		{"batch: POLICY_VIOLATION", wrapped(kafkago.PolicyViolation), false},
		{"batch: MESSAGE_TOO_LARGE", wrapped(kafkago.WriteErrors{kafkago.MessageSizeTooLarge}), false},
		{"batch: one message too large among retriable ones", wrapped(kafkago.WriteErrors{kafkago.NotEnoughReplicas, kafkago.MessageSizeTooLarge}), false},
		{"batch: INVALID_RECORD", wrapped(kafkago.InvalidRecord), false},
		{"batch: CORRUPT_MESSAGE, after kafka-go's own attempts", wrapped(kafkago.InvalidMessage), false},
		{"batch: RECORD_LIST_TOO_LARGE", wrapped(kafkago.RecordListTooLarge), false},
		{"batch: TOPIC_AUTHORIZATION_FAILED", wrapped(kafkago.TopicAuthorizationFailed), false},
		{"commit: CLUSTER_AUTHORIZATION_FAILED", wrapped(kafkago.ClusterAuthorizationFailed), false},
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
