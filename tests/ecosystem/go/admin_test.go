package ecosystem

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func strp(s string) *string { return &s }

// describeConfig returns one topic config as kadm describes it.
func describeConfig(t *testing.T, adm *kadm.Client, topic, key string) *kadm.Config {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctxFor(t, 10*time.Second), topic)
	if err != nil {
		t.Fatalf("describe configs: %v", err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatalf("describe configs of %s: %v", topic, err)
	}
	if rc.Err != nil {
		t.Fatalf("describe configs of %s: %v", topic, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return &c
		}
	}
	t.Fatalf("describe configs of %s: no %s among %d configs", topic, key, len(rc.Configs))
	return nil
}

// kadm's topic lifecycle: create (with configs, and a duplicate refused), list and
// describe, describe/alter configs incrementally and wholesale, grow, delete.
func TestAdminTopicsAndConfigs(t *testing.T) {
	adm := newAdmin(t)
	ctx := ctxFor(t, 60*time.Second)
	a, b := uniq("adm-a"), uniq("adm-b")

	created, err := adm.CreateTopics(ctx, 3, 1, map[string]*string{"retention.ms": strp("3600000")}, a, b)
	if err != nil {
		t.Fatalf("create topics: %v", err)
	}
	for _, name := range []string{a, b} {
		r, ok := created[name]
		if !ok || r.Err != nil || r.NumPartitions != 3 || r.ReplicationFactor != 1 {
			t.Fatalf("create %s: %+v", name, r)
		}
	}
	dup, err := adm.CreateTopic(ctx, 1, 1, nil, a)
	if err == nil {
		err = dup.Err
	}
	if !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("create duplicate topic: err %v, want TOPIC_ALREADY_EXISTS", err)
	}
	// One node: replication factor 3 is refused.
	rf3, err := adm.CreateTopic(ctx, 1, 3, nil, uniq("adm-rf3"))
	if err == nil {
		err = rf3.Err
	}
	if !errors.Is(err, kerr.InvalidReplicationFactor) {
		t.Fatalf("create with replication factor 3: err %v, want INVALID_REPLICATION_FACTOR", err)
	}

	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		t.Fatalf("list brokers: %v", err)
	}
	if ids := brokers.NodeIDs(); len(ids) != 2 {
		t.Fatalf("brokers %v, want two (one per shard)", ids)
	}
	listed, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	for _, name := range []string{a, b} {
		td, ok := listed[name]
		if !ok {
			t.Fatalf("list topics: %s missing", name)
		}
		if td.Err != nil || len(td.Partitions) != 3 || td.ID == (kadm.TopicID{}) {
			t.Fatalf("list topics: %s err %v, %d partitions, id %v", name, td.Err, len(td.Partitions), td.ID)
		}
		for _, p := range td.Partitions {
			if p.Leader != 0 && p.Leader != 1 || len(p.Replicas) != 1 || p.Replicas[0] != p.Leader {
				t.Fatalf("list topics: %s[%d] leader %d replicas %v", name, p.Partition, p.Leader, p.Replicas)
			}
		}
	}

	// Configs: the override from CreateTopics is dynamic, others are defaults.
	c := describeConfig(t, adm, a, "retention.ms")
	if c.MaybeValue() != "3600000" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms = %q from %v, want 3600000 from DYNAMIC_TOPIC_CONFIG", c.MaybeValue(), c.Source)
	}
	if c := describeConfig(t, adm, a, "cleanup.policy"); c.MaybeValue() != "delete" || c.Source == kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("cleanup.policy = %q from %v, want the default delete", c.MaybeValue(), c.Source)
	}
	defaultMax := describeConfig(t, adm, a, "max.message.bytes").MaybeValue()

	// Incremental: set one, delete another.
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "max.message.bytes", Value: strp("200000")},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}, a)
	if err != nil || resp[0].Err != nil {
		t.Fatalf("incremental alter: %v %+v", err, resp)
	}
	if c := describeConfig(t, adm, a, "max.message.bytes"); c.MaybeValue() != "200000" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("after set: max.message.bytes = %q from %v", c.MaybeValue(), c.Source)
	}
	if c := describeConfig(t, adm, a, "retention.ms"); c.MaybeValue() == "3600000" || c.Source == kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("after delete: retention.ms = %q from %v, want the default", c.MaybeValue(), c.Source)
	}
	// An invalid value is refused and changes nothing.
	resp, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "cleanup.policy", Value: strp("bogus")}}, a)
	if err == nil && resp[0].Err == nil {
		t.Fatalf("cleanup.policy=bogus accepted")
	}
	if c := describeConfig(t, adm, a, "cleanup.policy"); c.MaybeValue() != "delete" {
		t.Fatalf("after refused alter: cleanup.policy = %q", c.MaybeValue())
	}

	// Legacy AlterConfigs: the given set replaces every override.
	resp, err = adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "cleanup.policy", Value: strp("compact")}}, a)
	if err != nil || resp[0].Err != nil {
		t.Fatalf("alter configs (state): %v %+v", err, resp)
	}
	if c := describeConfig(t, adm, a, "cleanup.policy"); c.MaybeValue() != "compact" {
		t.Fatalf("after state alter: cleanup.policy = %q", c.MaybeValue())
	}
	if c := describeConfig(t, adm, a, "max.message.bytes"); c.MaybeValue() != defaultMax {
		t.Fatalf("after state alter: max.message.bytes = %q, want the default %q back", c.MaybeValue(), defaultMax)
	}

	// Grow b from 3 to 5 partitions.
	grown, err := adm.CreatePartitions(ctx, 2, b)
	if err != nil || grown[b].Err != nil {
		t.Fatalf("create partitions: %v %+v", err, grown)
	}
	eventually(t, 10*time.Second, "5 partitions in metadata", func() bool {
		md, err := adm.ListTopics(ctx, b)
		return err == nil && len(md[b].Partitions) == 5
	})

	deleted, err := adm.DeleteTopics(ctx, a, b)
	if err != nil {
		t.Fatalf("delete topics: %v", err)
	}
	for _, name := range []string{a, b} {
		if r := deleted[name]; r.Err != nil {
			t.Fatalf("delete %s: %v", name, r.Err)
		}
	}
	eventually(t, 10*time.Second, "deleted topics gone from the listing", func() bool {
		all, err := adm.ListTopics(ctx)
		if err != nil {
			return false
		}
		return !all.Has(a) && !all.Has(b)
	})
	again, err := adm.DeleteTopic(ctx, a)
	if err == nil {
		err = again.Err
	}
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("deleting a deleted topic: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
}

// ListOffsets through kadm: start, end, by timestamp, and the start after DeleteRecords.
func TestAdminListOffsets(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("adm-offsets")
	createTopic(t, adm, topic, 2, nil)
	cl := newClient(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	var rs []*kgo.Record
	for i := 0; i < 10; i++ {
		rs = append(rs, &kgo.Record{Partition: 0, Timestamp: base.Add(time.Duration(i) * time.Second), Value: []byte{byte(i)}})
	}
	ctx := ctxFor(t, 30*time.Second)
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	check := func(what string, listed kadm.ListedOffsets, err error, want map[int32]int64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := map[int32]int64{}
		listed.Each(func(o kadm.ListedOffset) {
			if o.Err != nil {
				t.Fatalf("%s %d: %v", what, o.Partition, o.Err)
			}
			got[o.Partition] = o.Offset
		})
		for p, w := range want {
			if got[p] != w {
				t.Errorf("%s: partition %d at %d, want %d (all: %v)", what, p, got[p], w, got)
			}
		}
	}
	l, err := adm.ListStartOffsets(ctx, topic)
	check("start", l, err, map[int32]int64{0: 0, 1: 0})
	l, err = adm.ListEndOffsets(ctx, topic)
	check("end", l, err, map[int32]int64{0: 10, 1: 0})
	l, err = adm.ListOffsetsAfterMilli(ctx, base.Add(5500*time.Millisecond).UnixMilli(), topic)
	check("after 5.5s", l, err, map[int32]int64{0: 6})
	l, err = adm.ListOffsetsAfterMilli(ctx, base.Add(4*time.Second).UnixMilli(), topic)
	check("at 4s", l, err, map[int32]int64{0: 4})
	if got := l[topic][0].Timestamp; got != base.Add(4*time.Second).UnixMilli() {
		t.Errorf("at 4s: timestamp %d, want %d", got, base.Add(4*time.Second).UnixMilli())
	}

	// Past the last timestamp the broker answers offset -1, which kadm turns
	// into the end offset.
	l, err = adm.ListOffsetsAfterMilli(ctx, base.Add(time.Hour).UnixMilli(), topic)
	check("after the last timestamp", l, err, map[int32]int64{0: 10, 1: 0})

	// DeleteRecords moves the start offset.
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: topic, Partition: 0, At: 3})
	dr, err := adm.DeleteRecords(ctx, os)
	if err != nil {
		t.Fatalf("delete records: %v", err)
	}
	if r := dr[topic][0]; r.Err != nil || r.LowWatermark != 3 {
		t.Fatalf("delete records: low watermark %d err %v, want 3", r.LowWatermark, r.Err)
	}
	l, err = adm.ListStartOffsets(ctx, topic)
	check("start after delete records", l, err, map[int32]int64{0: 3, 1: 0})
}

// kadm's DescribeGroups and Lag: a live member with uncommitted records shows lag
// on its assigned partitions; after it leaves the group is Empty with the same lag.
func TestAdminDescribeGroupsLag(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("adm-lag")
	group := uniq("adm-lag-group")
	const partitions = 3
	createTopic(t, adm, topic, partitions, nil)
	produceToPartitions(t, topic, partitions, 20, "a")

	consumer := newClient(t,
		kgo.ClientID("lag-consumer"),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	ctx := ctxFor(t, 60*time.Second)
	var got []*kgo.Record
	for len(got) < partitions*20 {
		fs := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d", len(got), partitions*20)
		}
		got = append(got, fs.Records()...)
	}
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// 7 more records on partition 0, 2 on partition 2; consumed but not committed.
	more := newClient(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var rs []*kgo.Record
	for i := 0; i < 7; i++ {
		rs = append(rs, &kgo.Record{Partition: 0, Value: []byte("b")})
	}
	rs = append(rs, &kgo.Record{Partition: 2, Value: []byte("b")}, &kgo.Record{Partition: 2, Value: []byte("b")})
	if err := more.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	wantLag := map[int32]int64{0: 7, 1: 0, 2: 2}

	lagOf := func(state string, member bool) {
		t.Helper()
		lags, err := adm.Lag(ctx, group)
		if err != nil {
			t.Fatalf("lag: %v", err)
		}
		l := lags[group]
		if l.Error() != nil {
			t.Fatalf("lag of %s: %v", group, l.Error())
		}
		if l.State != state || l.ProtocolType != "consumer" {
			t.Fatalf("group state %q type %q, want %q consumer", l.State, l.ProtocolType, state)
		}
		if member && (len(l.Members) != 1 || l.Members[0].ClientID != "lag-consumer") {
			t.Fatalf("members %+v, want one lag-consumer", l.Members)
		}
		for p, w := range wantLag {
			ml, ok := l.Lag.Lookup(topic, p)
			if !ok {
				t.Fatalf("no lag for partition %d", p)
			}
			if ml.Err != nil || ml.Lag != w || ml.Commit.At != 20 || ml.End.Offset != 20+w {
				t.Errorf("partition %d: lag %d (commit %d, end %d, err %v), want %d", p, ml.Lag, ml.Commit.At, ml.End.Offset, ml.Err, w)
			}
			if member != !ml.IsEmpty() {
				t.Errorf("partition %d: member %v, want a member: %v", p, ml.Member, member)
			}
		}
	}
	lagOf("Stable", true)

	dg, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatalf("describe groups: %v", err)
	}
	d := dg[group]
	assigned := d.AssignedPartitions()[topic]
	var ps []int32
	for p := range assigned {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	if len(ps) != partitions {
		t.Fatalf("described assignment %v, want all %d partitions", ps, partitions)
	}

	consumer.Close() // leaves without committing the last 9 records
	eventually(t, 10*time.Second, "the group to be Empty", func() bool {
		dg, err := adm.DescribeGroups(ctx, group)
		return err == nil && dg[group].State == "Empty"
	})
	lagOf("Empty", false)

	groups, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatalf("list groups: %v", err)
	}
	if !contains(groups.Groups(), group) {
		t.Fatalf("list groups: %s missing from %v", group, groups.Groups())
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Offsets of a group without members: kadm commits them (generation -1), fetches
// them, deletes one partition's (OffsetDelete), then deletes the group. Log dirs
// list the topic's partitions with their sizes.
func TestAdminGroupOffsetsAndLogDirs(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("adm-goff")
	group := uniq("adm-goff-group")
	createTopic(t, adm, topic, 2, nil)
	produceToPartitions(t, topic, 2, 10, "x")
	ctx := ctxFor(t, 30*time.Second)

	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: topic, Partition: 0, At: 4, LeaderEpoch: -1, Metadata: "four"})
	os.Add(kadm.Offset{Topic: topic, Partition: 1, At: 7, LeaderEpoch: -1})
	resps, err := adm.CommitOffsets(ctx, group, os)
	if err != nil || resps.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resps.Error())
	}
	fetched, err := adm.FetchOffsets(ctx, group)
	if err != nil || fetched.Error() != nil {
		t.Fatalf("fetch offsets: %v %v", err, fetched.Error())
	}
	if o, _ := fetched.Lookup(topic, 0); o.At != 4 || o.Metadata != "four" {
		t.Fatalf("partition 0 committed %d %q, want 4 \"four\"", o.At, o.Metadata)
	}
	if o, _ := fetched.Lookup(topic, 1); o.At != 7 {
		t.Fatalf("partition 1 committed %d, want 7", o.At)
	}
	lags, err := adm.Lag(ctx, group)
	if err != nil {
		t.Fatalf("lag: %v", err)
	}
	if l := lags[group]; l.State != "Empty" {
		t.Fatalf("group state %q, want Empty", l.State)
	} else if l0, _ := l.Lag.Lookup(topic, 0); l0.Lag != 6 {
		t.Fatalf("lag of partition 0: %d, want 6", l0.Lag)
	}

	dels, err := adm.DeleteOffsets(ctx, group, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		t.Fatalf("delete offsets: %v", err)
	}
	if err, ok := dels.Lookup(topic, 0); !ok || err != nil {
		t.Fatalf("delete offsets of partition 0: present %v, err %v", ok, err)
	}
	fetched, err = adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	if o, ok := fetched.Lookup(topic, 0); ok && o.At >= 0 {
		t.Fatalf("partition 0 still committed at %d after OffsetDelete", o.At)
	}
	if o, _ := fetched.Lookup(topic, 1); o.At != 7 {
		t.Fatalf("partition 1 committed %d after deleting partition 0's, want 7", o.At)
	}

	dg, err := adm.DeleteGroup(ctx, group)
	if err == nil {
		err = dg.Err
	}
	if err != nil {
		t.Fatalf("delete group: %v", err)
	}
	fetched, err = adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets of the deleted group: %v", err)
	}
	if o, ok := fetched.Lookup(topic, 1); ok && o.At >= 0 {
		t.Fatalf("deleted group still has partition 1 at %d", o.At)
	}

	dirs, err := adm.DescribeAllLogDirs(ctx, kadm.TopicsSet{topic: {0: {}, 1: {}}})
	if err != nil {
		t.Fatalf("describe log dirs: %v", err)
	}
	found := 0
	dirs.Each(func(d kadm.DescribedLogDir) {
		if d.Err != nil {
			t.Errorf("log dir %s of broker %d: %v", d.Dir, d.Broker, d.Err)
		}
		for _, ps := range d.Topics {
			for _, p := range ps {
				if p.Topic == topic {
					found++
					if p.Size <= 0 || p.Broker != d.Broker {
						t.Errorf("%s[%d] on broker %d: size %d", p.Topic, p.Partition, p.Broker, p.Size)
					}
				}
			}
		}
	})
	if found != 2 {
		t.Fatalf("log dirs list %d partitions of %s, want 2", found, topic)
	}
}
