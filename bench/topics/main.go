// Command topics creates, counts and deletes the benchmark's topics (kafka-go, no JVM start):
//
//	topics --brokers 127.0.0.1:9092 create NAME [PARTITIONS]
//	topics --brokers 127.0.0.1:9092 count NAME        # prints end - start offsets (markers included)
//	topics --brokers 127.0.0.1:9092 records NAME      # prints "RECORDS DISTINCT_KEYS", read committed
//	topics --brokers 127.0.0.1:9092 delete NAME...
//	topics --brokers 127.0.0.1:9092 delete-prefix PREFIX   # every topic whose name starts with it
package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/keysetsync/keysetsync/bench/internal/benchkit"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers (loopback only)")
	flag.Parse()
	bs, err := benchkit.Brokers(*brokers)
	if err != nil {
		benchkit.Fatal("topics", err)
	}
	args := flag.Args()
	if len(args) < 2 {
		benchkit.Fatal("topics", fmt.Errorf("usage: topics [--brokers B] create NAME [PARTITIONS] | count NAME | records NAME | delete NAME... | delete-prefix PREFIX"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := benchkit.Client(bs)
	if err != nil {
		benchkit.Fatal("topics", err)
	}
	defer c.Close()
	switch args[0] {
	case "create":
		parts := 1
		if len(args) > 2 {
			if parts, err = strconv.Atoi(args[2]); err != nil || parts < 1 {
				benchkit.Fatal("topics", fmt.Errorf("partitions %q", args[2]))
			}
		}
		err = benchkit.CreateTopic(ctx, c, args[1], parts)
	case "count":
		var n int64
		if n, err = benchkit.Messages(ctx, c, args[1]); err == nil {
			fmt.Println(n)
		}
	case "records":
		var n, keys int64
		if n, keys, err = benchkit.Records(ctx, c, args[1]); err == nil {
			fmt.Println(n, keys)
		}
	case "delete":
		err = c.DeleteTopics(ctx, args[1:]...)
	case "delete-prefix":
		if len(args[1]) < 6 {
			benchkit.Fatal("topics", fmt.Errorf("prefix %q is too short to be a benchmark's", args[1]))
		}
		var names []string
		if names, err = benchkit.TopicsWithPrefix(ctx, c, args[1]); err == nil {
			err = c.DeleteTopics(ctx, names...)
		}
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		benchkit.Fatal("topics", err)
	}
}
