package main

import (
	"context"
	"fmt"
)

func runSchema(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "schema", "Print the Avro schema (JSON) of the values keysetsync writes: the built-in users schema, or the\n--schema file once it parsed (so this also checks a custom schema).")
	var source sourceFlags
	fs.StringVar(&source.schemaFile, "schema", "", "Avro schema file (.avsc) to check and print instead of the built-in users schema")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	text, err := source.schemaText()
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	_, err = fmt.Fprint(e.stdout, text)
	return err
}
