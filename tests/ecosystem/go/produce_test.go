package ecosystem

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The producer with its defaults (idempotent, acks=all) writes to a multi-partition
// topic; a consumer gets every record back exactly once, at the offset the
// producer was told, in produce order within each partition.
func TestIdempotentProducerDefaults(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("idem")
	const partitions = 6
	createTopic(t, adm, topic, partitions, nil)

	producer := newClient(t, kgo.DefaultProduceTopic(topic))
	const n = 3000
	type where struct {
		partition int32
		offset    int64
	}
	var (
		mu        sync.Mutex
		produced  = map[string]where{}
		producers = map[int64]bool{}
		errs      []error
	)
	ctx := ctxFor(t, 60*time.Second)
	for i := 0; i < n; i++ {
		r := &kgo.Record{Key: []byte("k" + strconv.Itoa(i%24)), Value: []byte(strconv.Itoa(i))}
		producer.Produce(ctx, r, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			produced[string(r.Value)] = where{r.Partition, r.Offset}
			producers[r.ProducerID] = true
		})
	}
	if err := producer.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	mu.Lock()
	if len(errs) > 0 {
		t.Fatalf("%d produce errors, first: %v", len(errs), errs[0])
	}
	if len(produced) != n {
		t.Fatalf("%d records acknowledged, want %d", len(produced), n)
	}
	if len(producers) != 1 {
		t.Fatalf("records carry producer ids %v, want one (the idempotent producer's)", producers)
	}
	for id := range producers {
		if id < 0 {
			t.Fatalf("records carry producer id %d: the producer was not idempotent", id)
		}
	}
	mu.Unlock()

	// Every partition's high watermark equals the number of records acknowledged in it.
	perPartition := map[int32]int64{}
	for _, w := range produced {
		perPartition[w.partition]++
	}
	if len(perPartition) < 3 {
		t.Fatalf("records went to %d partitions, want them spread over >= 3", len(perPartition))
	}
	ends := endOffsets(t, adm, topic)
	for p := int32(0); p < partitions; p++ {
		if ends[p] != perPartition[p] {
			t.Errorf("partition %d: high watermark %d, %d records acknowledged", p, ends[p], perPartition[p])
		}
	}

	records := consumeAll(t, topic, n)
	seen := map[string]bool{}
	nextOffset := map[int32]int64{}
	lastOfKey := map[string]int{}
	for _, r := range records {
		v := string(r.Value)
		if seen[v] {
			t.Fatalf("record %s consumed twice", v)
		}
		seen[v] = true
		want, ok := produced[v]
		if !ok {
			t.Fatalf("consumed record %q that was never produced", v)
		}
		if want.partition != r.Partition || want.offset != r.Offset {
			t.Fatalf("record %s at %d/%d, producer was told %d/%d", v, r.Partition, r.Offset, want.partition, want.offset)
		}
		if r.Offset != nextOffset[r.Partition] {
			t.Fatalf("partition %d: offset %d follows %d", r.Partition, r.Offset, nextOffset[r.Partition]-1)
		}
		nextOffset[r.Partition]++
		i, _ := strconv.Atoi(v)
		if last, ok := lastOfKey[string(r.Key)]; ok && last >= i {
			t.Fatalf("key %s: record %d after %d, out of produce order", r.Key, i, last)
		}
		lastOfKey[string(r.Key)] = i
	}
	if len(seen) != n {
		t.Fatalf("consumed %d distinct records, want %d", len(seen), n)
	}
}

// Each compression codec round-trips: the producer's batches are written with the
// codec, and the consumer reads batches with that codec and the same values.
func TestCompressionCodecs(t *testing.T) {
	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
		typ   uint8 // the batch attribute's compression bits
	}{
		{"gzip", kgo.GzipCompression(), 1},
		{"snappy", kgo.SnappyCompression(), 2},
		{"lz4", kgo.Lz4Compression(), 3},
		{"zstd", kgo.ZstdCompression(), 4},
	}
	adm := newAdmin(t)
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			topic := uniq("comp-" + c.name)
			createTopic(t, adm, topic, 2, nil)
			hooks := &batchHooks{}
			producer := newClient(t,
				kgo.DefaultProduceTopic(topic),
				kgo.ProducerBatchCompression(c.codec),
				kgo.ProducerLinger(20*time.Millisecond),
				kgo.WithHooks(hooks),
			)
			const n = 500
			ctx := ctxFor(t, 30*time.Second)
			rs := make([]*kgo.Record, n)
			for i := range rs {
				rs[i] = &kgo.Record{
					Key:   []byte(strconv.Itoa(i % 7)),
					Value: []byte(fmt.Sprintf("%s record %05d %s", c.name, i, "repetitive payload repetitive payload repetitive payload")),
				}
			}
			if err := producer.ProduceSync(ctx, rs...).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
			if got := hooks.producedTypes(); len(got) != 1 || !got[c.typ] {
				t.Fatalf("produced batches with compression types %v, want only %d", got, c.typ)
			}

			fetchHooks := &batchHooks{}
			records := consumeAll(t, topic, n, kgo.WithHooks(fetchHooks))
			if len(records) != n {
				t.Fatalf("consumed %d records, want %d", len(records), n)
			}
			want := map[string]bool{}
			for _, r := range rs {
				want[string(r.Value)] = true
			}
			for _, r := range records {
				if !want[string(r.Value)] {
					t.Fatalf("consumed unexpected or duplicate value %q", r.Value)
				}
				delete(want, string(r.Value))
			}
			if got := fetchHooks.fetchedTypes(); len(got) != 1 || !got[c.typ] {
				t.Fatalf("fetched batches with compression types %v, want only %d", got, c.typ)
			}
			if ratio := fetchHooks.ratio(); ratio >= 0.8 {
				t.Fatalf("fetched batches are %.2f of their uncompressed size: not compressed", ratio)
			}
		})
		// A compacted topic makes the broker decompress every batch to check
		// that each record has a key: keyed records are accepted, a batch with a
		// record without a key is refused with INVALID_RECORD.
		t.Run(c.name+"-compacted", func(t *testing.T) {
			topic := uniq("comp-compact-" + c.name)
			createTopic(t, adm, topic, 1, map[string]*string{"cleanup.policy": strp("compact")})
			producer := newClient(t,
				kgo.DefaultProduceTopic(topic),
				kgo.ProducerBatchCompression(c.codec),
				kgo.RecordRetries(2),
			)
			ctx := ctxFor(t, 30*time.Second)
			var rs []*kgo.Record
			for i := 0; i < 200; i++ {
				rs = append(rs, &kgo.Record{Key: []byte(fmt.Sprintf("key-%d", i%50)), Value: []byte(fmt.Sprintf("%s value %d of a compacted topic, compacted topic", c.name, i))})
			}
			if err := producer.ProduceSync(ctx, rs...).FirstErr(); err != nil {
				t.Fatalf("produce keyed records: %v", err)
			}
			err := producer.ProduceSync(ctx, &kgo.Record{Value: []byte("no key, no key, no key, no key")}).FirstErr()
			if !errors.Is(err, kerr.InvalidRecord) {
				t.Fatalf("record without a key on a compacted topic: %v, want INVALID_RECORD", err)
			}
			records := consumeAll(t, topic, 200)
			for i, r := range records {
				if string(r.Value) != string(rs[i].Value) || r.Offset != int64(i) {
					t.Fatalf("record %d: %q at %d, want %q", i, r.Value, r.Offset, rs[i].Value)
				}
			}
		})
	}
}

type batchHooks struct {
	mu           sync.Mutex
	produced     map[uint8]bool
	fetched      map[uint8]bool
	compressed   int
	uncompressed int
}

var (
	_ kgo.HookProduceBatchWritten = (*batchHooks)(nil)
	_ kgo.HookFetchBatchRead      = (*batchHooks)(nil)
)

func (h *batchHooks) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.produced == nil {
		h.produced = map[uint8]bool{}
	}
	h.produced[m.CompressionType] = true
}

func (h *batchHooks) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fetched == nil {
		h.fetched = map[uint8]bool{}
	}
	h.fetched[m.CompressionType] = true
	h.compressed += m.CompressedBytes
	h.uncompressed += m.UncompressedBytes
}

func (h *batchHooks) producedTypes() map[uint8]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.produced
}

func (h *batchHooks) fetchedTypes() map[uint8]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fetched
}

func (h *batchHooks) ratio() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.uncompressed == 0 {
		return 1
	}
	return float64(h.compressed) / float64(h.uncompressed)
}

var _ = context.Background

// Metadata's allow_auto_topic_creation: a producer that allows it creates the
// topic (with the broker's default partition count) by producing to it; one that
// does not gets UNKNOWN_TOPIC_OR_PARTITION and the topic is not created.
func TestAutoTopicCreation(t *testing.T) {
	adm := newAdmin(t)
	ctx := ctxFor(t, 30*time.Second)

	created := uniq("auto")
	cl := newClient(t, kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic(created))
	r := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("made it")})
	if err := r.FirstErr(); err != nil {
		t.Fatalf("produce with auto creation: %v", err)
	}
	topics, err := adm.ListTopics(ctx, created)
	if err != nil || !topics.Has(created) || len(topics[created].Partitions) != 1 {
		t.Fatalf("auto-created topic: %v %+v", err, topics[created])
	}
	if got := consumeAll(t, created, 1); string(got[0].Value) != "made it" {
		t.Fatalf("read %q", got[0].Value)
	}

	missing := uniq("noauto")
	cl = newClient(t, kgo.DefaultProduceTopic(missing), kgo.UnknownTopicRetries(1))
	err = cl.ProduceSync(ctx, &kgo.Record{Value: []byte("nowhere")}).FirstErr()
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("produce to a missing topic without auto creation: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	if topics, err := adm.ListTopics(ctx); err != nil || topics.Has(missing) {
		t.Fatalf("topic %s exists after a produce that did not allow auto creation (err %v)", missing, err)
	}
}

// A batch larger than the topic's max.message.bytes is refused with
// MESSAGE_TOO_LARGE; a smaller one on the same topic is accepted.
func TestMessageTooLarge(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("too-large")
	createTopic(t, adm, topic, 1, map[string]*string{"max.message.bytes": strp("20000")})
	cl := newClient(t, kgo.DefaultProduceTopic(topic), kgo.RecordRetries(1))
	ctx := ctxFor(t, 30*time.Second)
	big := make([]byte, 50000)
	if _, err := rand.Read(big); err != nil { // random: snappy, kgo's default codec, cannot shrink it
		t.Fatal(err)
	}
	err := cl.ProduceSync(ctx, &kgo.Record{Value: big}).FirstErr()
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("50000-byte record on a topic with max.message.bytes 20000: %v, want MESSAGE_TOO_LARGE", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: big[:10000]}).FirstErr(); err != nil {
		t.Fatalf("10000-byte record: %v", err)
	}
	got := consumeAll(t, topic, 1)
	if len(got[0].Value) != 10000 || got[0].Offset != 0 {
		t.Fatalf("read a %d-byte record at %d, want the 10000-byte one at 0", len(got[0].Value), got[0].Offset)
	}
}
