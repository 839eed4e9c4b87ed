package kafkatest

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// Breaker is a TCP proxy for the connections of a kafka-go transport (set its Dial as the
// transport's): it forwards every connection to the broker address the transport dialed, and
// can close one when a request of a given API key arrives, before the broker sees it. The
// client then reads EOF where it waited for the answer, as it does when a broker goes away
// mid-request. It works the same in front of kfake and the real broker.
type Breaker struct {
	ln net.Listener

	mu      sync.Mutex
	drops   map[int16]int // API key -> requests still to drop
	dropped map[int16]int // API key -> requests dropped
	conns   map[net.Conn]struct{}
	refuse  bool // the broker is down: dials are refused
	wg      sync.WaitGroup
}

// NewBreaker starts a Breaker, stopped at cleanup.
func NewBreaker(t testing.TB) *Breaker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &Breaker{ln: ln, drops: map[int16]int{}, dropped: map[int16]int{}, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.conns = nil // connections accepted from now on are closed at once
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// Dial connects to addr through the proxy; it is a kafka.Transport's Dial.
func (b *Breaker) Dial(ctx context.Context, _, addr string) (net.Conn, error) {
	b.mu.Lock()
	refuse := b.refuse
	b.mu.Unlock()
	if refuse {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", b.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	// The proxy learns where to forward from this first line; the transport's bytes follow.
	if _, err := fmt.Fprintf(c, "%s\n", addr); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Refuse makes the broker look down (true) or back (false) to the transport: going down closes
// every connection and refuses dials (connection refused), as a stopped broker does.
func (b *Breaker) Refuse(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refuse = down
	if down {
		for c := range b.conns {
			c.Close()
		}
	}
}

// Drop makes the next n requests with API key (kmsg.Fetch, kmsg.ListOffsets, ...) close their
// connection instead of reaching the broker.
func (b *Breaker) Drop(key int16, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drops[key] += n
}

// Dropped is how many requests with API key were dropped.
func (b *Breaker) Dropped(key int16) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped[key]
}

func (b *Breaker) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Breaker) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return // closed at cleanup
		}
		b.wg.Add(1)
		go b.serve(c)
	}
}

func (b *Breaker) serve(client net.Conn) {
	defer b.wg.Done()
	defer client.Close()
	if !b.track(client) {
		return
	}
	in := bufio.NewReader(client)
	addr, err := in.ReadString('\n')
	if err != nil {
		return
	}
	upstream, err := net.Dial("tcp", addr[:len(addr)-1])
	if err != nil {
		return // the client reads EOF, as from a broker that is down
	}
	defer upstream.Close()
	if !b.track(upstream) {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		io.Copy(client, upstream) //nolint:errcheck // ends when either side closes
		client.Close()
	}()
	// Requests are framed by a 4-byte length; the API key is the first field of the header.
	var size [4]byte
	for {
		if _, err := io.ReadFull(in, size[:]); err != nil {
			return
		}
		req := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(in, req); err != nil || len(req) < 2 {
			return
		}
		if b.take(int16(binary.BigEndian.Uint16(req))) {
			return // closes both connections
		}
		if _, err := upstream.Write(append(size[:], req...)); err != nil {
			return
		}
	}
}

func (b *Breaker) take(key int16) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drops[key] == 0 {
		return false
	}
	b.drops[key]--
	b.dropped[key]++
	return true
}
