// Package benchkit holds what the bench/ programs share: loopback-only address checks, a Kafka
// client, topic helpers, running the keysetsync binary and reading its JSON log, and printing
// one JSON result line.
package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keysetsync/keysetsync/kafka"
)

// Loopback refuses a host:port whose host is not a loopback address: the benchmarks never
// touch anything but this machine.
func Loopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q: %w", hostport, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: the benchmarks only talk to this machine", hostport)
	}
	return nil
}

// LoopbackURL checks that u is http(s) on a loopback host.
func LoopbackURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") {
		return fmt.Errorf("%q is not an http(s) URL", u)
	}
	hp := p.Host
	if p.Port() == "" {
		hp = net.JoinHostPort(p.Hostname(), "80")
	}
	return Loopback(hp)
}

// Brokers splits a comma-separated broker list and checks every entry is loopback.
func Brokers(s string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b == "" {
			continue
		}
		if err := Loopback(b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, errors.New("no brokers")
	}
	return out, nil
}

// Client is a Kafka client for brokers.
func Client(brokers []string) (*kafka.Client, error) {
	return kafka.NewClient(kafka.Config{Brokers: brokers, ClientID: "keysetsync-bench", DialTimeout: 5 * time.Second})
}

// CreateTopic creates name with partitions partitions and replication factor 1, and waits until
// every partition has a leader, so the first produce does not fail.
func CreateTopic(ctx context.Context, c *kafka.Client, name string, partitions int) error {
	_, err := c.EnsureTopic(ctx, kafka.TopicSpec{Name: name, Partitions: partitions, ReplicationFactor: 1})
	return err
}

// RunTopics names a data topic and a cursor topic unique to this run:
// <prefix><kind>-<unix time>-<random> and <prefix><kind>-cursors-<unix time>-<random>.
func RunTopics(prefix, kind string) (topic, cursorTopic string) {
	id := fmt.Sprintf("%d-%08x", time.Now().Unix(), rand.Uint32())
	return prefix + kind + "-" + id, prefix + kind + "-cursors-" + id
}

// Deleter returns a function, to defer, that deletes the topics within 30 s; a failure is
// reported on w as "<what>: <error>" and does not change the run's result.
func Deleter(c *kafka.Client, what string, w io.Writer, names ...string) func() {
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.DeleteTopics(ctx, names...); err != nil {
			fmt.Fprintf(w, "%s: %v\n", what, err)
		}
	}
}

// RunFlags are the flags every measurement that writes its own topics shares: --brokers,
// --keep-topics, --prefix and --env.
type RunFlags struct {
	what       string
	brokers    *string
	keep       *bool
	prefix     *string
	BrokerList []string // after Parse
}

// NewRunFlags registers the shared flags of the measurement named what (its errors start with it).
func NewRunFlags(what string) *RunFlags {
	f := &RunFlags{what: what}
	f.brokers = flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers (loopback only)")
	f.keep = flag.Bool("keep-topics", false, "keep the topics (default: delete them at the end)")
	f.prefix = flag.String("prefix", "bench-", "prefix of the topic names")
	EnvFlag()
	return f
}

// Parse parses the command line and checks the brokers; it exits the program on an error.
func (f *RunFlags) Parse() {
	flag.Parse()
	bs, err := Brokers(*f.brokers)
	if err != nil {
		Fatal(f.what, err)
	}
	f.BrokerList = bs
}

// Keep reports whether --keep-topics was given.
func (f *RunFlags) Keep() bool { return *f.keep }

// Open connects to the brokers and names this run's data and cursor topics (RunTopics, of
// kind); done closes the client and, unless --keep-topics, first deletes the topics (Deleter,
// failures on w). It exits the program when it cannot connect.
func (f *RunFlags) Open(kind string, w io.Writer) (c *kafka.Client, topic, cursorTopic string, done func()) {
	topic, cursorTopic = RunTopics(*f.prefix, kind)
	c, err := Client(f.BrokerList)
	if err != nil {
		Fatal(f.what, err)
	}
	del := func() {}
	if !*f.keep {
		del = Deleter(c, f.what, w, topic, cursorTopic)
	}
	return c, topic, cursorTopic, func() {
		del()
		c.Close()
	}
}

// TopicsWithPrefix lists the topics whose name starts with prefix.
func TopicsWithPrefix(ctx context.Context, c *kafka.Client, prefix string) ([]string, error) {
	names, err := c.Topics(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out, nil
}

// Messages returns the sum over the topic's partitions of end offset minus start offset: the
// records plus, in a topic written in transactions, one marker per transaction (see Records).
func Messages(ctx context.Context, c *kafka.Client, name string) (int64, error) {
	rd := c.NewReader(kafka.ReaderConfig{Topic: name})
	parts, err := rd.Partitions(ctx)
	if err != nil {
		return 0, err
	}
	bounds, err := rd.Offsets(ctx, parts)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, b := range bounds {
		n += b.End - b.First
	}
	return n, nil
}

// Records reads the topic as a read_committed consumer does (kafka.Client.Scan: committed data
// only, transaction markers and aborted records stepped over) and returns how many records it
// holds and how many distinct keys. Offsets cannot count records once a producer writes in
// transactions: every commit adds a marker that takes an offset (Messages counts those too).
func Records(ctx context.Context, c *kafka.Client, name string) (records, keys int64, err error) {
	seen := map[string]struct{}{}
	err = c.Scan(ctx, name, func(r kafka.Record) error {
		records++
		seen[string(r.Key)] = struct{}{}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", name, err)
	}
	return records, int64(len(seen)), nil
}

// EndOffset returns the end offset (the offset of the next message) of one partition.
func EndOffset(ctx context.Context, c *kafka.Client, name string, partition int) (int64, error) {
	bounds, err := c.NewReader(kafka.ReaderConfig{Topic: name}).Offsets(ctx, []int{partition})
	if err != nil {
		return 0, err
	}
	return bounds[partition].End, nil
}

// Emit prints v as one JSON line on stdout.
func Emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(append(b, '\n'))
}

// Fatal prints the error on stderr and exits 1.
func Fatal(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

// LogLine is one JSON log line of keysetsync (slog JSONHandler).
type LogLine map[string]any

// Msg is the line's message.
func (l LogLine) Msg() string { s, _ := l["msg"].(string); return s }

// Int reads a numeric field.
func (l LogLine) Int(k string) int64 {
	f, _ := l[k].(float64)
	return int64(f)
}

// Seconds reads a duration field (slog's JSON handler writes nanoseconds).
func (l LogLine) Seconds(k string) float64 {
	f, _ := l[k].(float64)
	return f / 1e9
}

// Once is the result of one `keysetsync once`.
type Once struct {
	Pass LogLine       // the "pass finished" line
	Wall time.Duration // process start to exit
	Log  []byte        // the whole stderr
	// PeakRSS is the process's peak resident set in bytes: ru_maxrss of its rusage, 0 if the
	// platform does not say. Linux starts a child's ru_maxrss at its parent's peak (vfork and
	// exec carry the old memory map's high-water mark over), so RunOnce first lowers this
	// process's peak to its current RSS (ParentRSS): PeakRSS is the child's own only when it
	// is above ParentRSS.
	PeakRSS int64
	// ParentRSS is this process's peak RSS in bytes when the child started, after the reset;
	// -1 if it could not be read or reset.
	ParentRSS int64
	// PolledHWM is the child's VmHWM read from /proc every 10 ms while it ran: a lower bound of
	// PeakRSS (0 if never read), to cross-check it.
	PolledHWM int64
	// CPU is the user plus system time the child used (its rusage), 0 if the platform does not say.
	CPU time.Duration
}

// resetPeakRSS returns this process's free memory to the OS and resets its peak RSS to its
// current RSS (clear_refs 5, Linux 4.0 and later), and returns that peak.
func resetPeakRSS() (int64, error) {
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return -1, fmt.Errorf("reset the peak RSS of this process: %w", err)
	}
	return vmHWM("self")
}

// vmHWM reads VmHWM (peak RSS) of /proc/<pid>/status, in bytes.
func vmHWM(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return -1, fmt.Errorf("/proc/%s/status: VmHWM %q: %w", pid, v, err)
			}
			return kib << 10, nil
		}
	}
	return -1, fmt.Errorf("/proc/%s/status: no VmHWM line", pid)
}

// Env is extra environment (KEY=VALUE) for the keysetsync processes these programs start; see
// EnvFlag.
var Env []string

type envFlag struct{}

func (envFlag) String() string { return strings.Join(Env, " ") }
func (envFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	Env = append(Env, v)
	return nil
}

// EnvFlag registers --env KEY=VALUE (repeatable) on the default flag set.
func EnvFlag() {
	flag.Var(envFlag{}, "env", "KEY=VALUE added to the environment of the keysetsync processes (repeatable), e.g. GOGC=400")
}

// Command is exec.Command with Env added to the environment.
func Command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), Env...)
	return cmd
}

// SyncArgs are the flags of once/run for the given API and topics, with JSON logs.
func SyncArgs(apiURL string, brokers []string, topic, cursorTopic, pipeline string) []string {
	return []string{
		"--api-url", apiURL, "--brokers", strings.Join(brokers, ","),
		"--topic", topic, "--cursor-topic", cursorTopic, "--pipeline", pipeline,
		"--topic-replication-factor", "1", "--retry-timeout", "0", "--log-format", "json",
	}
}

// RunOnce runs `bin once args...` bounded by ctx, and returns its pass summary.
func RunOnce(ctx context.Context, bin string, args ...string) (Once, error) {
	cmd := Command(ctx, bin, append([]string{"once"}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	parent, _ := resetPeakRSS()
	start := time.Now()
	var polled atomic.Int64
	err := cmd.Start()
	if err == nil {
		stop := make(chan struct{})
		polling := make(chan struct{})
		go func() {
			defer close(polling)
			pid := strconv.Itoa(cmd.Process.Pid)
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				if v, err := vmHWM(pid); err == nil {
					polled.Store(max(polled.Load(), v))
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		err = cmd.Wait()
		close(stop)
		<-polling
	}
	o := Once{Wall: time.Since(start), Log: stderr.Bytes(), ParentRSS: parent, PolledHWM: polled.Load()}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			o.PeakRSS = ru.Maxrss << 10 // Linux reports KiB
			o.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	for _, l := range ParseLog(stderr.Bytes()) {
		if l.Msg() == "pass finished" {
			o.Pass = l
		}
	}
	if err != nil {
		return o, fmt.Errorf("%s once: %w\n%s", bin, err, tail(stderr.Bytes(), 20))
	}
	if o.Pass == nil {
		return o, fmt.Errorf("%s once: no \"pass finished\" line in its log\n%s", bin, tail(stderr.Bytes(), 20))
	}
	if ok, _ := o.Pass["ok"].(bool); !ok {
		return o, fmt.Errorf("%s once: pass not ok\n%s", bin, tail(stderr.Bytes(), 20))
	}
	return o, nil
}

// ParseLog parses the JSON lines of a keysetsync log, skipping anything else.
func ParseLog(b []byte) []LogLine {
	var out []LogLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var l LogLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
