package source

import "context"

// Limiter gates API requests: a parallel backfill's walks share one, so that together they
// stay within what the API takes (the throttle package's adaptive limiter behind an adapter).
type Limiter interface {
	// Acquire waits until one more request may start, or ctx ends. release is called once
	// the request was answered, with its error (nil: a page): a limiter slows down on 429s
	// and 5xx, honouring their Retry-After (HTTPError.RetryAfter).
	Acquire(ctx context.Context) (release func(err error), err error)
}

// acquire is lim's Acquire; without a limiter every request starts at once.
func acquire(ctx context.Context, lim Limiter) (func(error), error) {
	if lim == nil {
		return func(error) {}, nil
	}
	return lim.Acquire(ctx)
}
