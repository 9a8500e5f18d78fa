package ecosystem

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Consume-transform-produce with kgo's GroupTransactSession: the first batch's
// transaction is aborted (its output must stay invisible and its input be read
// again), every later one commits. A read_committed reader of the output then sees
// each input record exactly once, and the group's committed offsets are the input's end.
func TestGroupTransactSession(t *testing.T) {
	adm := newAdmin(t)
	in, out := uniq("txn-in"), uniq("txn-out")
	group := uniq("txn-group")
	const partitions, perPartition = 3, 100
	const n = partitions * perPartition
	createTopic(t, adm, in, partitions, nil)
	createTopic(t, adm, out, partitions, nil)
	produceToPartitions(t, in, partitions, perPartition, "in")

	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(bootstrap()...),
		kgo.WithLogger(logger(t)),
		kgo.TransactionalID(uniq("txn-id")),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.DefaultProduceTopic(out),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionTimeout(30*time.Second),
	)
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer sess.Close()

	ctx := ctxFor(t, 60*time.Second)
	aborted := 0     // output records of the aborted transaction
	transformed := 0 // input records handed to a committed transaction
	commits := 0
	for transformed < n {
		fs := sess.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("transformed %d of %d records before the deadline", transformed, n)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetch %s[%d]: %v", topic, p, err)
		})
		rs := fs.Records()
		if len(rs) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		abort := aborted == 0
		for _, r := range rs {
			value := "out:" + string(r.Value)
			if abort {
				value = "aborted:" + string(r.Value)
			}
			sess.Produce(ctx, &kgo.Record{Partition: r.Partition, Key: r.Value, Value: []byte(value)}, func(_ *kgo.Record, err error) {
				if err != nil && !errors.Is(err, kgo.ErrAborting) {
					t.Errorf("produce in transaction: %v", err)
				}
			})
		}
		try := kgo.TryCommit
		if abort {
			// End(TryAbort) drops records still buffered; flush so that the
			// aborted records are really written to the log first.
			if err := sess.Client().Flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			try = kgo.TryAbort
		}
		committedTxn, err := sess.End(ctx, try)
		if err != nil {
			t.Fatalf("end transaction: %v", err)
		}
		if abort {
			if committedTxn {
				t.Fatalf("End(TryAbort) reported a commit")
			}
			aborted = len(rs)
			continue
		}
		if !committedTxn {
			// A rebalance can make the session abort; it rewinds and we go again.
			t.Logf("transaction of %d records aborted by the session", len(rs))
			continue
		}
		commits++
		transformed += len(rs)
	}
	if transformed != n {
		t.Fatalf("committed transformations of %d records, want %d (duplicates after the abort?)", transformed, n)
	}
	t.Logf("%d committed transactions, first transaction of %d records aborted", commits, aborted)

	c := committed(t, adm, group, in)
	for p := int32(0); p < partitions; p++ {
		if c[p] != perPartition {
			t.Errorf("group offset of %s[%d] is %d, want %d", in, p, c[p], perPartition)
		}
	}

	// read_committed: each input exactly once, nothing of the aborted transaction.
	ends := endOffsets(t, adm, out)
	var total int64
	for _, e := range ends {
		total += e
	}
	committedRecords := consumeAll(t, out, n, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	counts := map[string]int{}
	for _, r := range committedRecords {
		v := string(r.Value)
		if strings.HasPrefix(v, "aborted:") {
			t.Fatalf("read_committed consumer saw aborted record %q", v)
		}
		counts[v]++
	}
	for p := 0; p < partitions; p++ {
		for i := 0; i < perPartition; i++ {
			v := fmt.Sprintf("out:in-%d-%d", p, i)
			if counts[v] != 1 {
				t.Errorf("%s seen %d times by read_committed, want once", v, counts[v])
			}
		}
	}
	if len(committedRecords) != n {
		t.Errorf("read_committed saw %d records, want %d", len(committedRecords), n)
	}

	// read_uncommitted sees the aborted records too: the abort really wrote data.
	all := consumeAll(t, out, n+aborted, kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	sawAborted := 0
	for _, r := range all {
		if strings.HasPrefix(string(r.Value), "aborted:") {
			sawAborted++
		}
	}
	if sawAborted != aborted {
		t.Errorf("read_uncommitted saw %d aborted records, want %d", sawAborted, aborted)
	}
	// The log holds data, one control batch per partition per transaction.
	if total <= int64(n+aborted) {
		t.Errorf("output end offsets sum to %d: no room for transaction markers after %d records", total, n+aborted)
	}
}

// A plain transactional producer: an aborted transaction is invisible to a
// read_committed consumer, a committed one after it is visible, and the last
// stable offset lets the consumer get past the aborted range.
func TestTransactionalProducerAbortThenCommit(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("txn-plain")
	createTopic(t, adm, topic, 2, nil)
	cl := newClient(t,
		kgo.TransactionalID(uniq("txn-plain-id")),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	ctx := ctxFor(t, 30*time.Second)
	for round, commit := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit, kgo.TryAbort, kgo.TryCommit} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		var rs []*kgo.Record
		for i := 0; i < 20; i++ {
			rs = append(rs, &kgo.Record{Partition: int32(i % 2), Value: []byte(fmt.Sprintf("round%d-%v-%d", round, bool(commit), i))})
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatalf("end transaction: %v", err)
		}
	}
	records := consumeAll(t, topic, 40, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	for _, r := range records {
		if !strings.Contains(string(r.Value), "-true-") {
			t.Fatalf("read_committed consumer saw aborted record %q", r.Value)
		}
	}
	if len(records) != 40 {
		t.Fatalf("read_committed saw %d records, want 40", len(records))
	}
	// 80 records and 4 markers per partition... 40 records + 4 markers per partition.
	for p, e := range endOffsets(t, adm, topic) {
		if e != 44 {
			t.Errorf("partition %d ends at %d, want 40 records + 4 markers = 44", p, e)
		}
	}
}

var _ = context.Background

// A second producer with the same transactional id fences the first: the first's
// open transaction is aborted, its later produce and commit fail, and only the
// second's transaction is visible. kadm describes the transaction, lists it and
// describes the partition's producers while it is open.
func TestTransactionFencingAndDescribe(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("txn-fence")
	createTopic(t, adm, topic, 1, nil)
	txnID := uniq("txn-fence-id")
	opts := []kgo.Opt{
		kgo.TransactionalID(txnID),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordRetries(3),
		kgo.TransactionTimeout(60 * time.Second),
	}
	ctx := ctxFor(t, 60*time.Second)
	first := newClient(t, opts...)
	if err := first.BeginTransaction(); err != nil {
		t.Fatalf("begin: %v", err)
	}
	var rs []*kgo.Record
	for i := 0; i < 5; i++ {
		rs = append(rs, &kgo.Record{Value: []byte(fmt.Sprintf("first-%d", i))})
	}
	res := first.ProduceSync(ctx, rs...)
	if err := res.FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	firstID, firstEpoch := res[0].Record.ProducerID, res[0].Record.ProducerEpoch

	// The open transaction as the admin API sees it.
	dts, err := adm.DescribeTransactions(ctx, txnID)
	if err != nil {
		t.Fatalf("describe transactions: %v", err)
	}
	dt := dts[txnID]
	if dt.Err != nil || dt.State != "Ongoing" || dt.ProducerID != firstID || dt.ProducerEpoch != firstEpoch || dt.TimeoutMillis != 60000 {
		t.Fatalf("described transaction %+v, want Ongoing, producer %d/%d, timeout 60000", dt, firstID, firstEpoch)
	}
	if _, ok := dt.Topics[topic][0]; !ok {
		t.Fatalf("described transaction's partitions %v, want %s[0]", dt.Topics, topic)
	}
	lts, err := adm.ListTransactions(ctx, nil, []string{"Ongoing"})
	if err != nil {
		t.Fatalf("list transactions: %v", err)
	}
	if lt, ok := lts[txnID]; !ok || lt.ProducerID != firstID {
		t.Fatalf("list transactions (Ongoing): %v, want %s with producer %d", lts.TransactionalIDs(), txnID, firstID)
	}
	dps, err := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		t.Fatalf("describe producers: %v", err)
	}
	dp, ok := dps[topic].Partitions[0].ActiveProducers[firstID]
	if !ok || dp.ProducerEpoch != firstEpoch || dp.LastSequence != 4 || dp.CurrentTxnStartOffset != 0 {
		t.Fatalf("described producers of %s[0]: %+v, want producer %d epoch %d, last sequence 4, transaction from offset 0", topic, dps[topic].Partitions[0], firstID, firstEpoch)
	}

	// The second instance fences the first.
	second := newClient(t, opts...)
	if err := second.BeginTransaction(); err != nil {
		t.Fatalf("second begin: %v", err)
	}
	res = second.ProduceSync(ctx, &kgo.Record{Value: []byte("second")})
	if err := res.FirstErr(); err != nil {
		t.Fatalf("second produce: %v", err)
	}
	if id, epoch := res[0].Record.ProducerID, res[0].Record.ProducerEpoch; id != firstID || epoch <= firstEpoch {
		t.Fatalf("second instance has producer %d/%d, want %d with an epoch above %d", id, epoch, firstID, firstEpoch)
	}
	if err := second.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("second commit: %v", err)
	}

	fenced := func(err error) bool {
		return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
	}
	err = first.ProduceSync(ctx, &kgo.Record{Value: []byte("first-late")}).FirstErr()
	if !fenced(err) {
		t.Fatalf("fenced producer's produce: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
	}
	if err := first.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatalf("fenced producer's commit succeeded")
	}

	records := consumeAll(t, topic, 1, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if len(records) != 1 || string(records[0].Value) != "second" {
		var vs []string
		for _, r := range records {
			vs = append(vs, string(r.Value))
		}
		t.Fatalf("read_committed sees %v, want only [second]", vs)
	}
	// After the fence: 5 aborted records, the abort marker, "second", its marker.
	if end := endOffsets(t, adm, topic)[0]; end != 8 {
		t.Errorf("end offset %d, want 8", end)
	}
	dts, err = adm.DescribeTransactions(ctx, txnID)
	if err != nil {
		t.Fatalf("describe transactions: %v", err)
	}
	if dt := dts[txnID]; dt.State != "CompleteCommit" {
		t.Errorf("transaction state after the commit %q, want CompleteCommit", dt.State)
	}
}

// Two GroupTransactSessions share the input; the second joins while the first is
// mid-stream, so transactions straddle a rebalance. Every input record still
// appears exactly once in the read_committed output, and the group's offsets end
// at the input's end.
func TestGroupTransactSessionRebalance(t *testing.T) {
	adm := newAdmin(t)
	in, out := uniq("txnrb-in"), uniq("txnrb-out")
	group := uniq("txnrb-group")
	const partitions, perPartition = 4, 250
	const n = partitions * perPartition
	createTopic(t, adm, in, partitions, nil)
	createTopic(t, adm, out, partitions, nil)
	// Input in batches of 10 records per partition, so that polls (limited by
	// FetchMaxPartitionBytes) and transactions are small and many.
	producer := newClient(t, kgo.DefaultProduceTopic(in), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for round := 0; round < perPartition/10; round++ {
		var rs []*kgo.Record
		for p := 0; p < partitions; p++ {
			for i := round * 10; i < (round+1)*10; i++ {
				rs = append(rs, &kgo.Record{Partition: int32(p), Value: []byte(fmt.Sprintf("in-%d-%d", p, i))})
			}
		}
		if err := producer.ProduceSync(ctxFor(t, 10*time.Second), rs...).FirstErr(); err != nil {
			t.Fatalf("produce input: %v", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	type stats struct{ commits, aborts int }
	worker := func(name string, done chan<- stats) {
		var st stats
		defer func() { done <- st }()
		sess, err := kgo.NewGroupTransactSession(
			kgo.SeedBrokers(bootstrap()...),
			kgo.WithLogger(logger(t)),
			kgo.ClientID(name),
			kgo.TransactionalID(uniq("txnrb-"+name)),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(in),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.RequireStableFetchOffsets(),
			kgo.DefaultProduceTopic(out),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.FetchMaxPartitionBytes(300), // a batch or two per partition and poll
			kgo.HeartbeatInterval(500*time.Millisecond),
			kgo.SessionTimeout(10*time.Second),
		)
		if err != nil {
			t.Errorf("%s: new session: %v", name, err)
			return
		}
		defer sess.Close()
		for ctx.Err() == nil {
			pollCtx, pollCancel := context.WithTimeout(ctx, 500*time.Millisecond)
			fs := sess.PollFetches(pollCtx)
			pollCancel()
			rs := fs.Records()
			if len(rs) == 0 {
				continue
			}
			if err := sess.Begin(); err != nil {
				t.Errorf("%s: begin: %v", name, err)
				return
			}
			for _, r := range rs {
				sess.Produce(ctx, &kgo.Record{Partition: r.Partition, Key: r.Value, Value: []byte("out:" + string(r.Value))}, nil)
			}
			time.Sleep(10 * time.Millisecond) // some processing time, so that the rebalance lands mid-transaction
			committed, err := sess.End(ctx, kgo.TryCommit)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("%s: end: %v", name, err)
				}
				return
			}
			if committed {
				st.commits++
			} else {
				st.aborts++
			}
		}
	}
	doneA, doneB := make(chan stats, 1), make(chan stats, 1)
	go worker("a", doneA)
	// B joins once A has committed part of the input.
	eventually(t, 30*time.Second, "the first session to commit some transactions", func() bool {
		c := committed(t, adm, group, in)
		var sum int64
		for _, o := range c {
			if o > 0 {
				sum += o
			}
		}
		return sum >= n/5
	})
	go worker("b", doneB)
	eventually(t, 60*time.Second, "the group's offsets at the input's end", func() bool {
		c := committed(t, adm, group, in)
		for p := int32(0); p < partitions; p++ {
			if c[p] != perPartition {
				return false
			}
		}
		return true
	})
	cancel()
	sa, sb := <-doneA, <-doneB
	t.Logf("session a: %d commits, %d aborts; session b: %d commits, %d aborts", sa.commits, sa.aborts, sb.commits, sb.aborts)
	if sb.commits == 0 {
		t.Errorf("the second session committed nothing: the group did not share the input")
	}

	records := consumeAll(t, out, n, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	counts := map[string]int{}
	for _, r := range records {
		counts[string(r.Value)]++
	}
	dups, missing := 0, 0
	for p := 0; p < partitions; p++ {
		for i := 0; i < perPartition; i++ {
			switch c := counts[fmt.Sprintf("out:in-%d-%d", p, i)]; {
			case c == 0:
				missing++
			case c > 1:
				dups++
			}
		}
	}
	if dups > 0 || missing > 0 || len(records) != n {
		t.Fatalf("read_committed output: %d records, %d inputs duplicated, %d missing", len(records), dups, missing)
	}
}
