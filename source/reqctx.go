package source

import (
	"context"
	"sync"
	"time"
)

// requestContext is the context of one API request: it ends with its parent, or with
// context.DeadlineExceeded once the request has run for its timeout, counting only the time
// it was not paused. A request is paused while its pass waits for its slot between the answer's
// headers and its body (fetchOnce), which is the process's wait, not the API's.
type requestContext struct {
	context.Context // the parent: values and deadline
	done            chan struct{}
	stopParent      func() bool

	mu    sync.Mutex
	err   error
	left  time.Duration // of the timeout, when paused
	since time.Time     // when the timer was last started
	timer *time.Timer   // nil while paused
}

func newRequestContext(parent context.Context, timeout time.Duration) *requestContext {
	c := &requestContext{Context: parent, done: make(chan struct{}), left: timeout}
	c.stopParent = context.AfterFunc(parent, func() { c.end(parent.Err()) })
	c.resume()
	return c
}

func (c *requestContext) Done() <-chan struct{} { return c.done }

func (c *requestContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// end ends the context with err, unless it has ended already.
func (c *requestContext) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	if c.timer != nil {
		c.timer.Stop()
	}
	c.stopParent()
}

// pause stops the timeout's clock; resume starts it again with what is left.
func (c *requestContext) pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil && c.timer.Stop() {
		c.left -= time.Since(c.since)
	}
	c.timer = nil
}

func (c *requestContext) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.timer != nil {
		return
	}
	c.since = time.Now()
	c.timer = time.AfterFunc(max(c.left, 0), func() { c.end(context.DeadlineExceeded) })
}
