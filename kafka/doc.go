// Package kafka is keysetsync's one seam to Kafka and the only importer of
// github.com/segmentio/kafka-go: dialing with TLS and SASL (Client), topic creation and
// configuration checks, reading a topic (for tail, verify, snapshot and the cursor store), the
// cursor store itself, the at-least-once data Sink and the transactional one. Every error it
// returns says itself whether retrying may help (retry.IsRetryable), by Kafka's error codes.
package kafka
