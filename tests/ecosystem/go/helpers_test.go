// Package ecosystem runs franz-go (kgo and kadm) against a running Strand broker.
//
// The broker is started by ../go-node.sh, which passes its bootstrap address in
// STRAND_BOOTSTRAP. Every test makes its own topics and groups with unique names,
// so tests never see each other's data.
package ecosystem

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func bootstrap() []string {
	if b := os.Getenv("STRAND_BOOTSTRAP"); b != "" {
		return strings.Split(b, ",")
	}
	return []string{"127.0.0.1:23000"}
}

// uniq returns prefix followed by a random suffix: a fresh topic or group name.
func uniq(prefix string) string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b[:])
}

// testLogger collects the client's log lines of one test and prints them only if
// the test fails. KGO_LOG_LEVEL=debug names every request, response and error code.
type testLogger struct {
	mu    sync.Mutex
	name  string
	level kgo.LogLevel
	buf   bytes.Buffer
	lines int
}

const maxLogLines = 4000

func (l *testLogger) Level() kgo.LogLevel { return l.level }

func (l *testLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines >= maxLogLines {
		return
	}
	l.lines++
	fmt.Fprintf(&l.buf, "%s [%s] %s: %s", time.Now().Format("15:04:05.000"), level, l.name, msg)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fmt.Fprintf(&l.buf, "; %v: %v", keyvals[i], keyvals[i+1])
	}
	l.buf.WriteByte('\n')
}

var loggers sync.Map // *testing.T -> *testLogger

func logger(t *testing.T) *testLogger {
	if l, ok := loggers.Load(t); ok {
		return l.(*testLogger)
	}
	level := kgo.LogLevelInfo
	switch strings.ToLower(os.Getenv("KGO_LOG_LEVEL")) {
	case "debug":
		level = kgo.LogLevelDebug
	case "warn":
		level = kgo.LogLevelWarn
	}
	l := &testLogger{name: t.Name(), level: level}
	loggers.Store(t, l)
	t.Cleanup(func() {
		loggers.Delete(t)
		if t.Failed() || os.Getenv("KGO_LOG_ALWAYS") != "" {
			l.mu.Lock()
			defer l.mu.Unlock()
			fmt.Fprintf(os.Stderr, "--- client log of %s ---\n%s", t.Name(), l.buf.String())
		}
	})
	return l
}

// newClient makes a kgo client on the broker with the test's logger; it is closed
// when the test ends.
func newClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append([]kgo.Opt{
		kgo.SeedBrokers(bootstrap()...),
		kgo.WithLogger(logger(t)),
	}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// newAdmin makes a kadm client. kadm answers metadata questions from kgo's cache
// while it is younger than MetadataMinAge (5 s by default); a short age makes a
// listing right after a create or delete ask the broker.
func newAdmin(t *testing.T) *kadm.Client {
	t.Helper()
	return kadm.NewClient(newClient(t, kgo.MetadataMinAge(100*time.Millisecond)))
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createTopic creates a topic with replication factor 1 and fails the test on error.
func createTopic(t *testing.T, adm *kadm.Client, name string, partitions int32, configs map[string]*string) {
	t.Helper()
	resp, err := adm.CreateTopic(ctxFor(t, 20*time.Second), partitions, 1, configs, name)
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	if resp.Err != nil {
		t.Fatalf("create topic %s: %v", name, resp.Err)
	}
	if resp.NumPartitions != partitions {
		t.Fatalf("create topic %s: %d partitions, want %d", name, resp.NumPartitions, partitions)
	}
}

// consumeAll reads the given topic from the start with a direct (group-less)
// consumer until want records arrived or the deadline passes; it then keeps
// polling briefly only if extra is true, to catch records beyond want.
func consumeAll(t *testing.T, topic string, want int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	all := append([]kgo.Opt{
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, opts...)
	cl := newClient(t, all...)
	ctx := ctxFor(t, 30*time.Second)
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records from %s before the deadline", len(out), want, topic)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetch %s[%d]: %v", topic, p, err)
		})
		out = append(out, fs.Records()...)
	}
	return out
}

// endOffsets lists the high watermarks of a topic's partitions.
func endOffsets(t *testing.T, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	listed, err := adm.ListEndOffsets(ctxFor(t, 10*time.Second), topic)
	if err != nil {
		t.Fatalf("list end offsets: %v", err)
	}
	out := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("list end offsets %s[%d]: %v", o.Topic, o.Partition, o.Err)
		}
		out[o.Partition] = o.Offset
	})
	return out
}

// eventually polls cond every 50 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
