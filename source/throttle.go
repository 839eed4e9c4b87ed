package source

import (
	"context"
	"errors"

	"github.com/keysetsync/keysetsync/throttle"
)

// Throttled is l as a walk's Limiter: each request's answer tells l how the API bears the load.
func Throttled(l *throttle.Limiter) Limiter { return throttled{l} }

type throttled struct{ l *throttle.Limiter }

func (t throttled) Acquire(ctx context.Context) (func(error), error) {
	release, err := t.l.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return func(err error) { release(OutcomeOf(err)) }, nil
}

// OutcomeOf says what an error of Fetch means for a throttle.Limiter around it (the mapper
// lives here, not in throttle, so that this package can use a Limiter without an import cycle):
//   - nil: throttle.OK.
//   - an *HTTPError with status 429, 408 or 5xx, anywhere in err's tree (Fetch wraps it after
//     its retries): throttle.Overloaded, with the answer's Retry-After. These are the answers
//     of an API at or past its capacity, the only ones that say sending less would help.
//   - anything else (another 4xx, a page or record that is not valid, a network failure, a
//     cancelled request): throttle.Failed, which leaves the limit as it is.
func OutcomeOf(err error) throttle.Outcome {
	if err == nil {
		return throttle.OK
	}
	var he *HTTPError
	if errors.As(err, &he) && he.Retryable() { // the same statuses: the API could serve it later
		return throttle.Overloaded(he.RetryAfter)
	}
	return throttle.Failed
}
