package source_test

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
)

// The API transport's HTTP/2 stream window shares a budget among the process's pipelines: what
// their unread answers may hold while they wait for a slot stays bounded however many there are,
// and a process of a few keeps Go's default 4 MiB (a page streams at window / round trip). It is
// otherwise http.DefaultTransport (proxy, timeouts, HTTP/2 over TLS).
func TestStreamWindowSharesABudgetAmongThePipelines(t *testing.T) {
	for _, tc := range []struct{ pipelines, window int }{
		{0, 4 << 20}, {1, 4 << 20}, {16, 4 << 20}, {17, 64 << 20 / 17}, {100, 64 << 20 / 100},
		{1000, 64 << 20 / 1000}, {100000, 64 << 10},
	} {
		require.Equal(t, tc.window, source.StreamWindow(tc.pipelines), "%d pipelines", tc.pipelines)
		require.LessOrEqual(t, source.StreamWindow(tc.pipelines)*tc.pipelines, max(64<<20, tc.pipelines*64<<10), "%d pipelines", tc.pipelines)
	}
	tr := source.NewTransport(1000)
	def := http.DefaultTransport.(*http.Transport)
	require.True(t, tr.ForceAttemptHTTP2)
	require.NotNil(t, tr.Proxy)
	require.Equal(t, def.TLSHandshakeTimeout, tr.TLSHandshakeTimeout)
	require.Equal(t, def.IdleConnTimeout, tr.IdleConnTimeout)
}

// What the transport tells the server, read off the wire: the first SETTINGS frame of an HTTP/2
// connection carries the client's initial stream window (SETTINGS_INITIAL_WINDOW_SIZE), how
// much of an answer the server may send before the client reads it. Go's default is 4 MiB.
func TestAPITransportAdvertisesTheStreamWindow(t *testing.T) {
	cert := httptest.NewTLSServer(http.NotFoundHandler())
	defer cert.Close()
	for _, pipelines := range []int{1, 100, 1000} {
		t.Run(fmt.Sprint(pipelines, " pipelines"), func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert.TLS.Certificates, NextProtos: []string{"h2"}})
			require.NoError(t, err)
			defer ln.Close()
			window := make(chan uint32, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				window <- readInitialWindow(t, c.(*tls.Conn))
			}()
			tr := source.NewTransport(pipelines)
			tr.TLSClientConfig = &tls.Config{RootCAs: cert.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
			src, err := source.NewSource(source.SourceConfig{URL: "https://" + ln.Addr().String() + "/pagination/keyset", Client: &http.Client{Transport: tr}, MaxAttempts: 1})
			require.NoError(t, err)
			go func() { _, _ = src.Fetch(t.Context(), 1, source.Query{Since: cursor.Start}) }() // fails once the server hangs up
			require.EqualValues(t, source.StreamWindow(pipelines), <-window)
		})
	}
}

// readInitialWindow reads an HTTP/2 client's connection preface and returns the
// SETTINGS_INITIAL_WINDOW_SIZE of its first SETTINGS frame (RFC 9113 sections 3.4 and 6.5;
// 65,535 when the frame does not set it). It fails the test on anything else.
func readInitialWindow(t *testing.T, c *tls.Conn) uint32 {
	if err := c.Handshake(); err != nil || c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Errorf("handshake: %v, protocol %q, want h2", err, c.ConnectionState().NegotiatedProtocol)
		return 0
	}
	preface := make([]byte, 24)
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
		t.Errorf("preface %q: %v", preface, err)
		return 0
	}
	for {
		head := make([]byte, 9) // length (24 bits), type, flags, stream id
		if _, err := io.ReadFull(c, head); err != nil {
			t.Errorf("frame header: %v", err)
			return 0
		}
		payload := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			t.Errorf("frame payload: %v", err)
			return 0
		}
		if head[3] != 0x4 || head[4]&0x1 != 0 { // not SETTINGS, or its ACK
			continue
		}
		window := uint32(65535)
		for i := 0; i+6 <= len(payload); i += 6 {
			if binary.BigEndian.Uint16(payload[i:]) == 0x4 {
				window = binary.BigEndian.Uint32(payload[i+2:])
			}
		}
		return window
	}
}

// Pages far larger than the stream window come through whole over HTTP/2: the window bounds
// what waits unread, not what a page may hold.
func TestSourceFetchesLargePagesOverHTTP2(t *testing.T) {
	pg, err := playground.New(playground.Config{Records: 30000, PageSize: 10000})
	require.NoError(t, err)
	var h2 atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2.Add(1)
		}
		pg.Handler().ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	tr := source.NewTransport(1000) // the smallest window
	tr.TLSClientConfig = &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL + "/pagination/keyset", Client: &http.Client{Transport: tr}})
	require.NoError(t, err)

	q := source.Query{Since: cursor.Start}
	records, biggest := 0, 0
	for page := 1; ; page++ {
		p, err := src.Fetch(t.Context(), page, q)
		require.NoError(t, err)
		for i := range p.Len() {
			_, err := p.User(page, i)
			require.NoError(t, err, "page %d record %d", page, i)
		}
		records, biggest = records+p.Len(), max(biggest, p.Bytes)
		if p.Next == nil {
			break
		}
		q = source.Query{Token: p.Next}
	}
	require.Equal(t, 30000, records)
	require.Greater(t, biggest, 4*source.StreamWindow(1000), "pages larger than the window")
	require.Positive(t, h2.Load(), "the requests went over HTTP/2")
}

// Pipelines asking one HTTP/1.1 host at once keep their connections between pages: a second
// round of as many requests at once dials none. http.DefaultTransport keeps two per host, and the
// rest were dialed (over TLS, handshaken) again for every page. The server answers a round only
// once all its requests are in, so each round needs a connection per request; the second starts
// once every connection of the first went back to the transport (httptrace's PutIdleConn).
func TestAPITransportKeepsAConnectionPerPipeline(t *testing.T) {
	const pipelines = 20
	var dials atomic.Int32
	var arrived sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		arrived.Wait()
		_, _ = w.Write([]byte("{}"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	client := &http.Client{Transport: source.NewTransport(pipelines)}
	put := make(chan error, 2*pipelines)
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{PutIdleConn: func(err error) { put <- err }})
	round := func() {
		arrived.Add(pipelines)
		var wg sync.WaitGroup
		for range pipelines {
			wg.Go(func() {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
				if !assert.NoError(t, err) {
					return
				}
				resp, err := client.Do(req)
				if !assert.NoError(t, err) {
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
		for range pipelines {
			<-put // kept or closed: each connection is done with
		}
	}
	round()
	require.EqualValues(t, pipelines, dials.Load(), "the first round: a connection per request")
	round()
	require.EqualValues(t, pipelines, dials.Load(), "the second round reuses them all")
}
