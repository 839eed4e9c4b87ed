package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keysetsync/keysetsync/retry"
	kafkago "github.com/segmentio/kafka-go"
)

// TopicSpec describes a topic to create if it is missing. An existing topic is never altered:
// how it is configured is reported (TopicInfo.Check), so callers can refuse a topic that would
// break their guarantees.
type TopicSpec struct {
	Name              string
	Partitions        int               // -1 lets the broker choose (num.partitions)
	ReplicationFactor int               // -1 lets the broker choose (default.replication.factor)
	Configs           map[string]string // topic-level configs, e.g. cleanup.policy=compact
}

// TopicInfo is what EnsureTopic found or made.
type TopicInfo struct {
	Created    bool
	Partitions []int
	Configs    map[string]string // every config the broker reports for the topic
}

// EnsureTopic makes sure spec.Name exists, creating it from spec when it does not, and returns its
// partitions and effective configuration. It waits until every partition has a leader, because
// a freshly created topic is not writable before that.
func (c *Client) EnsureTopic(ctx context.Context, spec TopicSpec) (info TopicInfo, err error) {
	defer func() { err = Classify(err) }()
	parts, err := c.Partitions(ctx, spec.Name)
	switch {
	case errors.Is(err, ErrUnknownTopic):
		if err := c.createTopic(ctx, spec); err != nil {
			return info, err
		}
		info.Created = true
		if parts, err = c.awaitLeaders(ctx, spec.Name); err != nil {
			return info, err
		}
	case err != nil:
		return info, err
	}
	info.Partitions = parts
	if info.Configs, err = c.TopicConfigs(ctx, spec.Name); err != nil {
		return info, err
	}
	return info, nil
}

// DefaultMaxMessageBytes is the broker's default message.max.bytes, the max.message.bytes of a
// topic that does not set its own: the largest record batch (header included) it accepts.
const DefaultMaxMessageBytes = 1048588

// MaxMessageBytes is the topic's max.message.bytes as TopicConfigs reports it (the broker reports its
// default for a topic without its own), or DefaultMaxMessageBytes when it is not reported.
func (i TopicInfo) MaxMessageBytes() (int, error) {
	v, ok := i.Configs["max.message.bytes"]
	if !ok || strings.TrimSpace(v) == "" {
		return DefaultMaxMessageBytes, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("max.message.bytes %q: not a positive integer", v)
	}
	return n, nil
}

// TopicConfigs returns the effective topic-level configuration of name.
func (c *Client) TopicConfigs(ctx context.Context, name string) (_ map[string]string, err error) {
	defer func() { err = Classify(err) }()
	res, err := c.client.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{
		Resources: []kafkago.DescribeConfigRequestResource{{ResourceType: kafkago.ResourceTypeTopic, ResourceName: name}},
	})
	if err != nil {
		return nil, fmt.Errorf("describe configs of topic %q: %w", name, err)
	}
	out := map[string]string{}
	for _, r := range res.Resources {
		if r.Error != nil {
			return nil, fmt.Errorf("describe configs of topic %q: %w", name, r.Error)
		}
		for _, e := range r.ConfigEntries {
			out[e.ConfigName] = e.ConfigValue
		}
	}
	return out, nil
}

// Partitions returns the partition ids of name; a missing topic is ErrUnknownTopic, a partition
// without a leader Kafka's LEADER_NOT_AVAILABLE (retryable).
func (c *Client) Partitions(ctx context.Context, name string) (_ []int, err error) {
	defer func() { err = Classify(err) }()
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{name}})
	if err != nil {
		return nil, fmt.Errorf("metadata of topic %q: %w", name, err)
	}
	for _, t := range md.Topics {
		if t.Name != name {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of topic %q: %w", name, t.Error)
		}
		ids := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			if p.Leader.Host == "" {
				return nil, fmt.Errorf("metadata of topic %q: partition %d: %w", name, p.ID, kafkago.LeaderNotAvailable)
			}
			ids = append(ids, p.ID)
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("metadata of topic %q: %w", name, kafkago.LeaderNotAvailable)
		}
		return ids, nil
	}
	return nil, fmt.Errorf("metadata of topic %q: %w", name, ErrUnknownTopic)
}

func (c *Client) createTopic(ctx context.Context, spec TopicSpec) error {
	tc := kafkago.TopicConfig{Topic: spec.Name, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor}
	for k, v := range spec.Configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafkago.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	if err := c.creates.create(ctx, tc); err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return fmt.Errorf("create topic %q: %w", spec.Name, err)
	}
	return nil
}

// sendCreateTopics is one CreateTopics request (topicCreates gathers its topics).
func (c *Client) sendCreateTopics(ctx context.Context, topics []kafkago.TopicConfig) (map[string]error, error) {
	res, err := c.client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	return res.Errors, nil
}

// DeleteTopics deletes the topics; one that does not exist is not an error.
func (c *Client) DeleteTopics(ctx context.Context, names ...string) (err error) {
	defer func() { err = Classify(err) }()
	if len(names) == 0 {
		return nil
	}
	res, err := c.client.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: names})
	if err != nil {
		return fmt.Errorf("delete topics %q: %w", names, err)
	}
	var errs []error
	for _, n := range slices.Sorted(maps.Keys(res.Errors)) {
		if e := res.Errors[n]; e != nil && !errors.Is(e, ErrUnknownTopic) {
			errs = append(errs, fmt.Errorf("delete topic %q: %w", n, e))
		}
	}
	return errors.Join(errs...)
}

// Topics returns the names of the cluster's topics, sorted.
func (c *Client) Topics(ctx context.Context) (_ []string, err error) {
	defer func() { err = Classify(err) }()
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	names := make([]string, 0, len(md.Topics))
	for _, t := range md.Topics {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names, nil
}

// awaitLeaders polls metadata until every partition of a new topic has a leader. Polling is the
// only way to observe this: Kafka sends no notification when a leader is elected.
func (c *Client) awaitLeaders(ctx context.Context, name string) (parts []int, err error) {
	leaderless := func(err error) bool {
		return errors.Is(err, kafkago.LeaderNotAvailable) || errors.Is(err, ErrUnknownTopic)
	}
	err = retry.Do(ctx, retry.Policy{Budget: 30 * time.Second, FirstDelay: 10 * time.Millisecond, MaxDelay: time.Second, Retryable: leaderless, What: fmt.Sprintf("waiting for a leader of every partition of topic %q", name)},
		func() (bool, error) {
			parts, err = c.Partitions(ctx, name)
			return false, err
		})
	return parts, err
}

// TopicConfigFlag is a set of topic-level configs that is also a flag.Value: each Set adds
// comma-separated name=value pairs. A piece without '=' continues the previous value, so
// "cleanup.policy=compact,delete,retention.ms=-1" is two configs. A later value for the same
// name wins.
type TopicConfigFlag map[string]string

// String lists the configs sorted by name, in the form Set accepts.
func (c *TopicConfigFlag) String() string {
	if c == nil || len(*c) == 0 {
		return ""
	}
	names := slices.Sorted(maps.Keys(*c))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + (*c)[n]
	}
	return strings.Join(parts, ",")
}

// Set adds the configs of v; an empty v adds nothing.
func (c *TopicConfigFlag) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	if *c == nil {
		*c = TopicConfigFlag{}
	}
	last := ""
	for _, piece := range strings.Split(v, ",") {
		name, value, ok := strings.Cut(piece, "=")
		if !ok {
			if last == "" {
				return fmt.Errorf("%q: want name=value", piece)
			}
			(*c)[last] += "," + piece
			continue
		}
		if name = strings.TrimSpace(name); name == "" {
			return fmt.Errorf("%q: empty config name", piece)
		}
		(*c)[name] = value
		last = name
	}
	return nil
}

// ConfigWarning is something about a topic's configuration worth a WARN log line.
type ConfigWarning struct {
	Msg   string
	Attrs []any // slog key/value pairs
}

// Check compares the configuration EnsureTopic found with the configs asked for (want) and returns
// one Warning per config whose value differs (an existing topic is never altered) and, when
// tombstones is set (the caller writes deletes as tombstones), one if the topic is compacted
// without delete: compaction eventually removes the tombstones themselves.
func (i TopicInfo) Check(name string, want map[string]string, tombstones bool) []ConfigWarning {
	var out []ConfigWarning
	for _, k := range slices.Sorted(maps.Keys(want)) {
		have, ok := i.Configs[k]
		switch {
		case !ok:
			out = append(out, ConfigWarning{
				Msg:   "the broker does not report a requested topic config: misspelt, or not a topic-level config; it is not applied",
				Attrs: []any{"topic", name, "config", k, "requested", want[k]},
			})
		case !sameConfigValue(k, want[k], have):
			out = append(out, ConfigWarning{
				Msg: "the existing topic has a config with another value than requested; keysetsync never alters an existing topic, so the topic's value applies (change it with kafka-configs --alter --add-config, or drop the --topic-config)",
				Attrs: []any{"topic", name, "config", k, "requested", want[k], "actual", have,
					"fix", alterConfigCommand(name, k+"="+bracket(want[k]))},
			})
		}
	}
	if tombstones && compactedOnly(i.Configs) {
		attrs := []any{"topic", name, "cleanup.policy", i.Configs["cleanup.policy"]}
		if d, ok := i.Configs["delete.retention.ms"]; ok {
			attrs = append(attrs, "delete.retention.ms", d)
		}
		out = append(out, ConfigWarning{
			Msg:   "the data topic is compacted (cleanup.policy=compact, without delete) and deletes are written as tombstones: compaction keeps only the tombstone of a deleted id, then removes the tombstone too after delete.retention.ms, so the id disappears from the topic. That is what a consumer rebuilding the latest state per id wants; a consumer that is offline for longer than delete.retention.ms never sees the delete and keeps the id",
			Attrs: attrs,
		})
	}
	return out
}

// sameConfigValue compares two values of config name; cleanup.policy is a set, so "delete,compact"
// equals "compact,delete".
func sameConfigValue(name, a, b string) bool {
	if name != "cleanup.policy" {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	return slices.Equal(policySet(a), policySet(b))
}

// compactedOnly says whether configs (as TopicConfigs returns them) compact the topic and never
// delete by retention.
func compactedOnly(configs map[string]string) bool {
	p := policySet(configs["cleanup.policy"])
	return slices.Contains(p, "compact") && !slices.Contains(p, "delete")
}

func policySet(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.ToLower(strings.TrimSpace(p)); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// alterConfigCommand is the kafka-configs command that sets the name=value pairs on topic.
func alterConfigCommand(topic string, pairs ...string) string {
	return fmt.Sprintf("kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config %s", topic, strings.Join(pairs, ","))
}

// bracket writes a list value as kafka-configs expects it: [a,b].
func bracket(v string) string {
	if strings.Contains(v, ",") {
		return "[" + v + "]"
	}
	return v
}
