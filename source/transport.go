package source

import "net/http"

// HTTP/2 receive windows of the API transport. A pass waiting for its slot (package schedule)
// with an answer's headers in hand leaves the body unread; over HTTP/1.1 it waits in the
// kernel's socket buffer, over HTTP/2 up to a stream's receive window of it waits in the
// process: Go's default window, 4 MiB, let a thousand pipelines over one HTTPS API hold a page
// each in the transport's buffers, bounded by the pipelines rather than by the slots. A smaller
// window costs speed instead: a page streams at up to window / round trip (64 KiB over 50 ms:
// about 1.3 MB/s per request), so the window is as large as the process's pipelines allow.
const (
	// streamBudget is what the unread answers of all the pipelines of a process may hold.
	streamBudget = 64 << 20
	// minStreamWindow is HTTP/2's own initial window.
	minStreamWindow = 64 << 10
	// maxStreamWindow is Go's default, which net/http keeps for larger values.
	maxStreamWindow = 4 << 20
)

// StreamWindow is the HTTP/2 receive window of each stream of a process running pipelines
// pipelines: streamBudget shared among them, at least HTTP/2's initial 64 KiB, at most Go's
// default 4 MiB (up to 16 pipelines).
func StreamWindow(pipelines int) int {
	return min(max(streamBudget/max(pipelines, 1), minStreamWindow), maxStreamWindow)
}

// maxIdlePerHost bounds the idle HTTP/1.1 connections kept to one host (each holds two
// goroutines and two 4 KiB buffers, about 20 KiB).
const maxIdlePerHost = 256

// NewTransport returns the HTTP transport for the API requests of a process running pipelines
// pipelines: http.DefaultTransport's settings (proxy from the environment, timeouts, HTTP/2 over
// TLS) with HTTP/2 streams' receive windows of StreamWindow(pipelines), and an idle HTTP/1.1
// connection kept per pipeline to a host (up to 256; the default keeps 2), so that pipelines
// asking one host at once reuse their connections instead of dialing (and over TLS handshaking)
// again for every page. One per process, shared by its pipelines.
func NewTransport(pipelines int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = min(max(pipelines, 2), maxIdlePerHost)
	t.MaxIdleConns = max(t.MaxIdleConns, t.MaxIdleConnsPerHost)
	if w := StreamWindow(pipelines); w < maxStreamWindow {
		t.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: w}
	}
	return t
}
