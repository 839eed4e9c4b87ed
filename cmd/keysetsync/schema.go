package main

import (
	"context"
	"fmt"

	"github.com/keysetsync/keysetsync/avro"
)

func runSchema(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "schema", "Print the Avro schema (JSON) of the values keysetsync writes.")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	_, err := fmt.Fprint(e.stdout, avro.Schema())
	return err
}
