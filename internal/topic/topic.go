// Package topic creates Kafka topics when they are missing and reports how existing ones are
// configured, so callers can refuse a topic that would break their guarantees.
package topic

import (
	"context"
	"errors"
	"fmt"
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
