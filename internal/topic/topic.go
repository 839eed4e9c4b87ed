// Package topic creates Kafka topics when they are missing and reports how existing ones are
// configured, so callers can refuse a topic that would break their guarantees.
package topic

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Spec describes a topic to create if it is missing. An existing topic is never altered.
type Spec struct {
	Name              string
	Partitions        int               // -1 lets the broker choose (num.partitions)
	ReplicationFactor int               // -1 lets the broker choose (default.replication.factor)
	Configs           map[string]string // topic-level configs, e.g. cleanup.policy=compact
}

// Info is what Ensure found or made.
type Info struct {
	Created    bool
	Partitions []int
	Configs    map[string]string // every config the broker reports for the topic
}

// Ensure makes sure spec.Name exists, creating it from spec when it does not, and returns its
// partitions and effective configuration. It waits until every partition has a leader, because
// a freshly created topic is not writable before that.
func Ensure(ctx context.Context, c *kafka.Client, spec Spec) (Info, error) {
	var info Info
	parts, err := Partitions(ctx, c, spec.Name)
	switch {
	case errors.Is(err, kafka.UnknownTopicOrPartition):
		if err := create(ctx, c, spec); err != nil {
			return info, err
		}
		info.Created = true
		if parts, err = awaitLeaders(ctx, c, spec.Name); err != nil {
			return info, err
		}
	case err != nil:
		return info, err
	}
	info.Partitions = parts
	if info.Configs, err = Configs(ctx, c, spec.Name); err != nil {
		return info, err
	}
	return info, nil
}

// DefaultMaxMessageBytes is the broker's default message.max.bytes, the max.message.bytes of a
// topic that does not set its own: the largest record batch (header included) it accepts.
const DefaultMaxMessageBytes = 1048588

// MaxMessageBytes is the topic's max.message.bytes as Configs reports it (the broker reports its
// default for a topic without its own), or DefaultMaxMessageBytes when it is not reported.
func (i Info) MaxMessageBytes() (int, error) {
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

// Configs returns the effective topic-level configuration of name.
func Configs(ctx context.Context, c *kafka.Client, name string) (map[string]string, error) {
	res, err := c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: name}},
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

// Partitions returns the partition ids of name; a missing topic is kafka.UnknownTopicOrPartition,
// a partition without a leader kafka.LeaderNotAvailable.
func Partitions(ctx context.Context, c *kafka.Client, name string) ([]int, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
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
				return nil, fmt.Errorf("metadata of topic %q: partition %d: %w", name, p.ID, kafka.LeaderNotAvailable)
			}
			ids = append(ids, p.ID)
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("metadata of topic %q: %w", name, kafka.LeaderNotAvailable)
		}
		return ids, nil
	}
	return nil, fmt.Errorf("metadata of topic %q: %w", name, kafka.UnknownTopicOrPartition)
}

func create(ctx context.Context, c *kafka.Client, spec Spec) error {
	tc := kafka.TopicConfig{Topic: spec.Name, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor}
	for k, v := range spec.Configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		return fmt.Errorf("create topic %q: %w", spec.Name, err)
	}
	if err := res.Errors[spec.Name]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %q: %w", spec.Name, err)
	}
	return nil
}

// awaitLeaders polls metadata until every partition of a new topic has a leader. Polling is the
// only way to observe this: Kafka sends no notification when a leader is elected.
func awaitLeaders(ctx context.Context, c *kafka.Client, name string) ([]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	delay := 10 * time.Millisecond
	for {
		parts, err := Partitions(ctx, c, name)
		if err == nil {
			return parts, nil
		}
		if !errors.Is(err, kafka.LeaderNotAvailable) && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("topic %q has no leader yet: %w", name, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// ConfigFlag is a set of topic-level configs that is also a flag.Value: each Set adds
// comma-separated name=value pairs. A piece without '=' continues the previous value, so
// "cleanup.policy=compact,delete,retention.ms=-1" is two configs. A later value for the same
// name wins.
type ConfigFlag map[string]string

// String lists the configs sorted by name, in the form Set accepts.
func (c *ConfigFlag) String() string {
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
func (c *ConfigFlag) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	if *c == nil {
		*c = ConfigFlag{}
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

// Warning is something about a topic's configuration worth a WARN log line.
type Warning struct {
	Msg   string
	Attrs []any // slog key/value pairs
}

// Check compares the configuration Ensure found with the configs asked for (want) and returns
// one Warning per config whose value differs (an existing topic is never altered) and, when
// tombstones is set (the caller writes deletes as tombstones), one if the topic is compacted
// without delete: compaction eventually removes the tombstones themselves.
func (i Info) Check(name string, want map[string]string, tombstones bool) []Warning {
	var out []Warning
	for _, k := range slices.Sorted(maps.Keys(want)) {
		have, ok := i.Configs[k]
		switch {
		case !ok:
			out = append(out, Warning{
				Msg:   "the broker does not report a requested topic config: misspelt, or not a topic-level config; it is not applied",
				Attrs: []any{"topic", name, "config", k, "requested", want[k]},
			})
		case !SameValue(k, want[k], have):
			out = append(out, Warning{
				Msg: "the existing topic has a config with another value than requested; keysetsync never alters an existing topic, so the topic's value applies (change it with kafka-configs --alter --add-config, or drop the --topic-config)",
				Attrs: []any{"topic", name, "config", k, "requested", want[k], "actual", have,
					"fix", fmt.Sprintf("kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config %s=%s", name, k, bracket(want[k]))},
			})
		}
	}
	if tombstones && CompactedOnly(i.Configs) {
		attrs := []any{"topic", name, "cleanup.policy", i.Configs["cleanup.policy"]}
		if d, ok := i.Configs["delete.retention.ms"]; ok {
			attrs = append(attrs, "delete.retention.ms", d)
		}
		out = append(out, Warning{
			Msg:   "the data topic is compacted (cleanup.policy=compact, without delete) and deletes are written as tombstones: compaction keeps only the tombstone of a deleted id, then removes the tombstone too after delete.retention.ms, so the id disappears from the topic. That is what a consumer rebuilding the latest state per id wants; a consumer that is offline for longer than delete.retention.ms never sees the delete and keeps the id",
			Attrs: attrs,
		})
	}
	return out
}

// SameValue compares two values of config name; cleanup.policy is a set, so "delete,compact"
// equals "compact,delete".
func SameValue(name, a, b string) bool {
	if name != "cleanup.policy" {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	return slices.Equal(policySet(a), policySet(b))
}

// CompactedOnly says whether configs (as Configs returns them) compact the topic and never
// delete by retention.
func CompactedOnly(configs map[string]string) bool {
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

// bracket writes a list value as kafka-configs expects it: [a,b].
func bracket(v string) string {
	if strings.Contains(v, ",") {
		return "[" + v + "]"
	}
	return v
}
