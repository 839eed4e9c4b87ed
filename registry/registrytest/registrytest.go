// Package registrytest is an in-memory schema registry that follows the Confluent REST API as
// far as keysetsync uses it: POST /subjects/{subject}/versions registers a schema and answers
// {"id":N}; the same schema again answers the same id; a subject can be made to refuse new
// schemas (409, as an incompatible schema); optional basic authentication (401 without it).
package registrytest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Registry is the fake registry's state.
type Registry struct {
	// Username and Password, when Username is set, are required as basic auth on every request.
	Username, Password string
	// FirstID is the id of the first schema registered (default 1).
	FirstID int

	mu           sync.Mutex
	ids          map[string]int // schema -> id, global as in Confluent
	subjects     map[string][]int
	incompatible map[string]bool
	requests     []Request
}

// Request is one request the fake received.
type Request struct {
	Method, Path, ContentType string
	Body                      string
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{ids: map[string]int{}, subjects: map[string][]int{}, incompatible: map[string]bool{}}
}

// Start serves r on an httptest server closed at cleanup and returns its URL.
func (r *Registry) Start(t testing.TB) string {
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv.URL
}

// Refuse makes subject answer every registration of a schema it does not have with 409.
func (r *Registry) Refuse(subject string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.incompatible[subject] = true
}

// Subject returns the ids registered under subject, in order.
func (r *Registry) Subject(subject string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.subjects[subject]...)
}

// Requests returns the requests received so far.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

func writeErr(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": msg})
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var body bytes.Buffer
	_, _ = body.ReadFrom(http.MaxBytesReader(w, req.Body, 1<<20))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, Request{Method: req.Method, Path: req.URL.Path, ContentType: req.Header.Get("Content-Type"), Body: body.String()})
	if r.Username != "" {
		u, p, ok := req.BasicAuth()
		if !ok || u != r.Username || p != r.Password {
			writeErr(w, http.StatusUnauthorized, 401, "Unauthorized")
			return
		}
	}
	rest, ok := strings.CutPrefix(req.URL.Path, "/subjects/")
	subject, ok2 := strings.CutSuffix(rest, "/versions")
	if !ok || !ok2 || subject == "" || strings.Contains(subject, "/") {
		writeErr(w, http.StatusNotFound, 404, "HTTP 404 Not Found")
		return
	}
	if req.Method != http.MethodPost {
		writeErr(w, http.StatusMethodNotAllowed, 405, "HTTP 405 Method Not Allowed")
		return
	}
	var in struct {
		Schema string `json:"schema"`
	}
	if err := json.Unmarshal(body.Bytes(), &in); err != nil || in.Schema == "" {
		writeErr(w, http.StatusUnprocessableEntity, 42201, "Either the input schema or one its references is invalid")
		return
	}
	var canon any
	if err := json.Unmarshal([]byte(in.Schema), &canon); err != nil {
		writeErr(w, http.StatusUnprocessableEntity, 42201, "Either the input schema or one its references is invalid")
		return
	}
	b, _ := json.Marshal(canon) // whitespace-insensitive identity
	key := string(b)
	id, known := r.ids[key]
	has := false
	if known {
		for _, v := range r.subjects[subject] {
			has = has || v == id
		}
	}
	if !has {
		if r.incompatible[subject] {
			writeErr(w, http.StatusConflict, 409, "Schema being registered is incompatible with an earlier schema for subject \""+subject+"\"")
			return
		}
		if !known {
			id = max(r.FirstID, 1) + len(r.ids)
			r.ids[key] = id
		}
		r.subjects[subject] = append(r.subjects[subject], id)
	}
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	json.NewEncoder(w).Encode(map[string]int{"id": id})
}
