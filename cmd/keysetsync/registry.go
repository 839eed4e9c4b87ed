package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/keysetsync/keysetsync/registry"
)

// registryFlags select the Confluent schema-registry mode. With --schema-registry, once and run
// register the value schema under <topic>-value at start and frame every data value in the
// Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary); the tools
// (tail, snapshot, verify) then strip that frame before decoding. Without it values are plain
// Avro binary. The basic-auth file is read once and its content never logged or printed.
type registryFlags struct {
	url           string
	basicAuthFile string
}

// register adds the flags of the sync commands.
func (r *registryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.url, "schema-registry", "", "schema registry URL: register the schema and frame values in the Confluent format (empty: none)")
	fs.StringVar(&r.basicAuthFile, "schema-registry-basic-auth-file", "", "file holding user:password for HTTP basic authentication to --schema-registry")
}

// registerRead adds the flag of the reading tools: they do not contact the registry, the flag
// only says that values carry the Confluent frame.
func (r *registryFlags) registerRead(fs *flag.FlagSet) {
	fs.StringVar(&r.url, "schema-registry", "", "set when the topic was written with --schema-registry: strip the Confluent frame before decoding")
}

func (r *registryFlags) validate() []error {
	var errs []error
	if r.basicAuthFile != "" && r.url == "" {
		errs = append(errs, errors.New("--schema-registry-basic-auth-file set without --schema-registry"))
	}
	if r.url != "" {
		if _, err := registry.New(registry.Config{URL: r.url}); err != nil {
			errs = append(errs, fmt.Errorf("--schema-registry: %w", err))
		}
	}
	return errs
}

// client is the schema-registry client of the flags; nil without --schema-registry. The
// basic-auth file is read here, once.
func (r *registryFlags) client() (*registry.Client, error) {
	if r.url == "" {
		return nil, nil
	}
	cfg := registry.Config{URL: r.url}
	if r.basicAuthFile != "" {
		s, err := readSecret(r.basicAuthFile, "--schema-registry-basic-auth-file")
		if err != nil {
			return nil, err
		}
		user, pass, ok := strings.Cut(s, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%w: --schema-registry-basic-auth-file %s: want user:password", errUsage, r.basicAuthFile)
		}
		cfg.Username, cfg.Password = user, pass
	}
	c, err := registry.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: --schema-registry: %w", errUsage, err)
	}
	return c, nil
}

// unframe returns the Avro payload of a value: with --schema-registry a value that starts with
// the magic byte loses its 5-byte frame; otherwise (or for a plain value) it is returned as is.
func (r *registryFlags) unframe(v []byte) []byte {
	if r.url == "" {
		return v
	}
	_, payload, _ := registry.Unframe(v)
	return payload
}
