package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/source"
)

// sourceFlags describe the source API (its contract) and the Avro schema of its records:
// shared by once, run and verify, so verify reads the API exactly as the sync does.
type sourceFlags struct {
	apiURL        string
	apiTimeout    time.Duration
	sinceParam    string
	tokenParam    string
	afterIDParam  string
	pageSizeParam string
	pageSize      int
	recordsPath   source.Path
	nextPath      source.Path
	totalPath     source.Path
	idPath        source.Path
	updatedAtPath source.Path
	timeFormat    string
	schemaFile    string
	deletedField  source.Path
	auth          apiAuthFlags

	loaded *avro.Schema // schemaFile, once read
}

func (f *sourceFlags) register(fs *flag.FlagSet) {
	d := source.DefaultContract()
	f.recordsPath, f.nextPath, f.idPath, f.updatedAtPath = d.RecordsPath, d.NextPath, d.IDPath, d.UpdatedAtPath
	fs.StringVar(&f.apiURL, "api-url", "http://127.0.0.1:5001/pagination/keyset", "keyset endpoint of the source API (its own query parameters are sent with every request)")
	fs.DurationVar(&f.apiTimeout, "api-timeout", 30*time.Second, "timeout of one API request, body included")
	fs.StringVar(&f.sinceParam, "api-since-param", d.SinceParam, "query parameter of the update time a request starts from; the API must treat it as inclusive (>=)")
	fs.StringVar(&f.tokenParam, "api-token-param", d.TokenParam, "query parameter carrying the previous page's next token (sent alone)")
	fs.StringVar(&f.afterIDParam, "api-after-id-param", "", "query parameter of a compound keyset (update time, id), to page through ties exactly (empty: none)")
	fs.StringVar(&f.pageSizeParam, "api-page-size-param", "", "query parameter of the page size, sent with every request with --api-page-size (empty: none)")
	fs.IntVar(&f.pageSize, "api-page-size", 0, "page size to ask for with --api-page-size-param")
	fs.Var(&f.recordsPath, "api-records-path", "JSON path (a.b.c) of the array of records in an answer")
	fs.Var(&f.nextPath, "api-next-path", "JSON path of the next token (null, \"\", false or absent end the pass; true goes on without one)")
	fs.Var(&f.totalPath, "api-total-path", "JSON path of the records a request matches, for progress estimates (empty: none)")
	fs.Var(&f.idPath, "api-id-path", "JSON path of the id in a record (a string or an integer): the Kafka key")
	fs.Var(&f.updatedAtPath, "api-updated-at-path", "JSON path of the update time in a record: the cursor")
	fs.StringVar(&f.timeFormat, "api-time-format", string(d.TimeFormat), "format of update times in records and --api-since-param: seconds, rfc3339, epoch_s or epoch_ms")
	fs.StringVar(&f.schemaFile, "schema", "", "Avro schema file (.avsc, a record) records are mapped to by field name (default: built-in users)")
	fs.Var(&f.deletedField, "deleted-field", "JSON path of a record field that marks a delete (true or a non-empty string): written as a tombstone")
	f.auth.register(fs)
}

// contract is the API's contract as the flags describe it.
func (f *sourceFlags) contract() (source.Contract, error) {
	// Validate checks every part together, the time format's name included.
	c := source.Contract{
		SinceParam: f.sinceParam, TokenParam: f.tokenParam, AfterIDParam: f.afterIDParam,
		PageSizeParam: f.pageSizeParam, PageSize: f.pageSize,
		RecordsPath: f.recordsPath, NextPath: f.nextPath, TotalPath: f.totalPath,
		IDPath: f.idPath, UpdatedAtPath: f.updatedAtPath, TimeFormat: source.TimeFormat(f.timeFormat),
	}
	if err := c.Validate(); err != nil {
		return source.Contract{}, fmt.Errorf("the --api-* flags: %w", err)
	}
	return c, nil
}

func (f *sourceFlags) validate() []error {
	var errs []error
	if _, err := f.contract(); err != nil {
		errs = append(errs, err)
	}
	if _, err := f.schema(); err != nil {
		errs = append(errs, err)
	}
	return append(errs, f.auth.validate()...)
}

// schema is the --schema file, parsed; nil for the built-in users schema.
func (f *sourceFlags) schema() (*avro.Schema, error) {
	if f.schemaFile == "" || f.loaded != nil {
		return f.loaded, nil
	}
	b, err := os.ReadFile(f.schemaFile)
	if err != nil {
		return nil, fmt.Errorf("--schema: %w", err)
	}
	s, err := avro.ParseSchema(string(b))
	if err != nil {
		return nil, fmt.Errorf("--schema %s: %w", f.schemaFile, err)
	}
	f.loaded = s
	return s, nil
}

// schemaText is the value schema as registered with a schema registry and printed by `schema`.
func (f *sourceFlags) schemaText() (string, error) {
	s, err := f.schema()
	if err != nil || s == nil {
		return avro.UserSchema(), err
	}
	return s.Text(), nil
}

// newSource builds the API client of the flags, sending its requests through api (the
// process's API transport, source.NewTransport).
func (f *sourceFlags) newSource(api http.RoundTripper, maxAttempts int, logger *slog.Logger) (*source.Source, error) {
	contract, err := f.contract()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	httpClient, err := f.auth.client(f.apiURL, api)
	if err != nil {
		return nil, err
	}
	src, err := source.NewSource(source.SourceConfig{URL: f.apiURL, Contract: contract, Client: httpClient, Timeout: f.apiTimeout, MaxAttempts: maxAttempts, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return src, nil
}

// walkOptions are the Walker settings that describe the records (not the pass).
func (f *sourceFlags) walkOptions() (source.WalkOptions, error) {
	s, err := f.schema()
	if err != nil {
		return source.WalkOptions{}, err
	}
	return source.WalkOptions{Schema: s, DeletedField: f.deletedField}, nil
}
