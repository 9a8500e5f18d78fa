package ecosystem

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// member is one consumer of a group, polling in its own goroutine.
type member struct {
	name    string
	cl      *kgo.Client
	mu      sync.Mutex
	owned   map[int32]bool
	revoked int // partitions revoked or lost so far
	seen    map[int32][]int64
	done    chan struct{}
}

func startMember(t *testing.T, name, group, topic string, extra ...kgo.Opt) *member {
	m := &member{name: name, owned: map[int32]bool{}, seen: map[int32][]int64{}, done: make(chan struct{})}
	take := func(ps map[string][]int32, add bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range ps[topic] {
			if add {
				m.owned[p] = true
			} else {
				delete(m.owned, p)
				m.revoked++
			}
		}
	}
	m.cl = newClient(t, append([]kgo.Opt{
		kgo.ClientID(name),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AutoCommitInterval(300 * time.Millisecond),
		kgo.HeartbeatInterval(500 * time.Millisecond),
		kgo.SessionTimeout(10 * time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { take(ps, true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { take(ps, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { take(ps, false) }),
	}, extra...)...,
	)
	go func() {
		defer close(m.done)
		for {
			fs := m.cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				m.mu.Lock()
				m.seen[r.Partition] = append(m.seen[r.Partition], r.Offset)
				m.mu.Unlock()
			})
		}
	}()
	return m
}

func (m *member) assignment() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p := range m.owned {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

func (m *member) revokedCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revoked
}

func (m *member) close() {
	m.cl.Close() // leaves the group after committing what was consumed
	<-m.done
}

// balanced reports whether the members own disjoint sets of `each` partitions
// that together cover 0..partitions-1.
func balanced(members []*member, partitions, each int) bool {
	all := map[int32]bool{}
	for _, m := range members {
		a := m.assignment()
		if len(a) != each {
			return false
		}
		for _, p := range a {
			if all[p] {
				return false
			}
			all[p] = true
		}
	}
	return len(all) == partitions
}

func describeAssignments(members []*member) string {
	s := ""
	for _, m := range members {
		s += fmt.Sprintf("%s=%v ", m.name, m.assignment())
	}
	return s
}

// produceToPartitions writes perPartition records to each partition of topic.
func produceToPartitions(t *testing.T, topic string, partitions, perPartition int, tag string) {
	t.Helper()
	cl := newClient(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var rs []*kgo.Record
	for p := 0; p < partitions; p++ {
		for i := 0; i < perPartition; i++ {
			rs = append(rs, &kgo.Record{Partition: int32(p), Value: []byte(fmt.Sprintf("%s-%d-%d", tag, p, i))})
		}
	}
	if err := cl.ProduceSync(ctxFor(t, 30*time.Second), rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// committed returns the group's committed offsets for topic.
func committed(t *testing.T, adm *kadm.Client, group, topic string) map[int32]int64 {
	t.Helper()
	resps, err := adm.FetchOffsets(ctxFor(t, 10*time.Second), group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	out := map[int32]int64{}
	for p, r := range resps[topic] {
		if r.Err != nil {
			t.Fatalf("fetch offsets %s[%d]: %v", topic, p, r.Err)
		}
		out[p] = r.At
	}
	return out
}

// Three cooperative-sticky members share a six-partition topic two partitions
// each; when one leaves, the other two take over its partitions without giving up
// their own; a member started after everyone left resumes from the committed offsets.
func TestCooperativeStickyGroup(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("coop")
	group := uniq("coop-group")
	const partitions, perPartition = 6, 100
	createTopic(t, adm, topic, partitions, nil)
	produceToPartitions(t, topic, partitions, perPartition, "first")

	members := []*member{
		startMember(t, "m1", group, topic),
		startMember(t, "m2", group, topic),
		startMember(t, "m3", group, topic),
	}
	eventually(t, 40*time.Second, "three members with two partitions each", func() bool {
		return balanced(members, partitions, 2)
	})
	t.Logf("balanced: %s", describeAssignments(members))

	// The group as the broker describes it agrees.
	dg, err := adm.DescribeGroups(ctxFor(t, 10*time.Second), group)
	if err != nil {
		t.Fatalf("describe group: %v", err)
	}
	if g := dg[group]; g.State != "Stable" || g.Protocol != "cooperative-sticky" || len(g.Members) != 3 {
		t.Fatalf("described group: state %q protocol %q %d members, want Stable cooperative-sticky 3", g.State, g.Protocol, len(g.Members))
	}

	// All 600 records are consumed and committed.
	eventually(t, 30*time.Second, "committed offsets at the end of every partition", func() bool {
		c := committed(t, adm, group, topic)
		for p := int32(0); p < partitions; p++ {
			if c[p] != perPartition {
				return false
			}
		}
		return true
	})

	survivors := members[:2]
	before := map[string][]int32{}
	revokedBefore := map[string]int{}
	for _, m := range survivors {
		before[m.name] = m.assignment()
		revokedBefore[m.name] = m.revokedCount()
	}
	members[2].close()
	eventually(t, 40*time.Second, "two members with three partitions each", func() bool {
		return balanced(survivors, partitions, 3)
	})
	t.Logf("after m3 left: %s", describeAssignments(survivors))
	for _, m := range survivors {
		now := map[int32]bool{}
		for _, p := range m.assignment() {
			now[p] = true
		}
		for _, p := range before[m.name] {
			if !now[p] {
				t.Errorf("%s lost partition %d it owned before m3 left (cooperative-sticky keeps it)", m.name, p)
			}
		}
		if r := m.revokedCount(); r != revokedBefore[m.name] {
			t.Errorf("%s had %d partitions revoked when m3 left, want none", m.name, r-revokedBefore[m.name])
		}
	}

	// The remaining members consume new records on all six partitions.
	produceToPartitions(t, topic, partitions, 10, "second")
	eventually(t, 30*time.Second, "new records consumed and committed", func() bool {
		c := committed(t, adm, group, topic)
		for p := int32(0); p < partitions; p++ {
			if c[p] != perPartition+10 {
				return false
			}
		}
		return true
	})
	for _, m := range survivors {
		m.close()
	}

	seen := map[int32]map[int64]bool{}
	for _, m := range members {
		for p, offs := range m.seen {
			if seen[p] == nil {
				seen[p] = map[int64]bool{}
			}
			for _, o := range offs {
				seen[p][o] = true
			}
		}
	}
	for p := int32(0); p < partitions; p++ {
		if len(seen[p]) != perPartition+10 {
			t.Errorf("partition %d: %d distinct offsets consumed, want %d", p, len(seen[p]), perPartition+10)
		}
	}

	// Restart: a new member of the group starts at the committed offsets and gets
	// exactly the records produced after everyone left.
	produceToPartitions(t, topic, partitions, 5, "third")
	m4 := startMember(t, "m4", group, topic)
	defer m4.close()
	eventually(t, 40*time.Second, "the restarted member to consume the 30 new records", func() bool {
		m4.mu.Lock()
		defer m4.mu.Unlock()
		n := 0
		for _, offs := range m4.seen {
			n += len(offs)
		}
		return n >= partitions*5
	})
	m4.mu.Lock()
	defer m4.mu.Unlock()
	for p := int32(0); p < partitions; p++ {
		offs := m4.seen[p]
		if len(offs) != 5 || offs[0] != perPartition+10 || offs[4] != perPartition+14 {
			t.Errorf("partition %d: restarted member consumed offsets %v, want %d..%d", p, offs, perPartition+10, perPartition+14)
		}
	}
}

// Static members (instance ids): a member that restarts within its session
// timeout gets its partitions back without a rebalance; the other member keeps
// its generation and partitions throughout.
func TestStaticMembersRestartWithoutRebalance(t *testing.T) {
	adm := newAdmin(t)
	topic := uniq("static")
	group := uniq("static-group")
	const partitions = 4
	createTopic(t, adm, topic, partitions, nil)
	produceToPartitions(t, topic, partitions, 10, "a")

	static := func(id string) kgo.Opt { return kgo.InstanceID(id) }
	s1 := startMember(t, "s1", group, topic, static("i1"), kgo.SessionTimeout(30*time.Second))
	s2 := startMember(t, "s2", group, topic, static("i2"), kgo.SessionTimeout(30*time.Second))
	members := []*member{s1, s2}
	eventually(t, 40*time.Second, "two static members with two partitions each", func() bool {
		return balanced(members, partitions, 2)
	})
	dg, err := adm.DescribeGroups(ctxFor(t, 10*time.Second), group)
	if err != nil {
		t.Fatalf("describe group: %v", err)
	}
	var ids []string
	for _, m := range dg[group].Members {
		if m.InstanceID != nil {
			ids = append(ids, *m.InstanceID)
		}
	}
	sort.Strings(ids)
	if fmt.Sprint(ids) != "[i1 i2]" {
		t.Fatalf("described instance ids %v, want [i1 i2]", ids)
	}

	s1Parts, s2Parts := s1.assignment(), s2.assignment()
	_, gen := s1.cl.GroupMetadata()
	revoked := s1.revokedCount()

	// s2 stops without leaving (static members do not send LeaveGroup) and a new
	// process with the same instance id takes its place.
	s2.close()
	s2b := startMember(t, "s2b", group, topic, static("i2"), kgo.SessionTimeout(30*time.Second))
	defer s2b.close()
	eventually(t, 20*time.Second, "the restarted static member to get its partitions back", func() bool {
		return fmt.Sprint(s2b.assignment()) == fmt.Sprint(s2Parts)
	})
	produceToPartitions(t, topic, partitions, 1, "b")
	eventually(t, 20*time.Second, "both members consuming the new records", func() bool {
		c := committed(t, adm, group, topic)
		for p := int32(0); p < partitions; p++ {
			if c[p] != 11 {
				return false
			}
		}
		return true
	})
	if _, g := s1.cl.GroupMetadata(); g != gen {
		t.Errorf("s1's generation moved from %d to %d: the restart rebalanced the group", gen, g)
	}
	if fmt.Sprint(s1.assignment()) != fmt.Sprint(s1Parts) || s1.revokedCount() != revoked {
		t.Errorf("s1 went from %v to %v (%d revoked) during s2's restart", s1Parts, s1.assignment(), s1.revokedCount()-revoked)
	}

	// The same for s1, so that whichever of the two leads the group has been
	// restarted (a rejoining static leader gets JoinGroup v9's skip_assignment,
	// KIP-814, instead of a rebalance).
	_, gen = s2b.cl.GroupMetadata()
	revoked = s2b.revokedCount()
	s1.close()
	s1b := startMember(t, "s1b", group, topic, static("i1"), kgo.SessionTimeout(30*time.Second))
	defer s1b.close()
	eventually(t, 20*time.Second, "the restarted static leader to get its partitions back", func() bool {
		return fmt.Sprint(s1b.assignment()) == fmt.Sprint(s1Parts)
	})
	produceToPartitions(t, topic, partitions, 1, "c")
	eventually(t, 20*time.Second, "both members consuming the newest records", func() bool {
		c := committed(t, adm, group, topic)
		for p := int32(0); p < partitions; p++ {
			if c[p] != 12 {
				return false
			}
		}
		return true
	})
	if _, g := s2b.cl.GroupMetadata(); g != gen {
		t.Errorf("s2b's generation moved from %d to %d: the leader's restart rebalanced the group", gen, g)
	}
	if fmt.Sprint(s2b.assignment()) != fmt.Sprint(s2Parts) || s2b.revokedCount() != revoked {
		t.Errorf("s2b went from %v to %v (%d revoked) during s1's restart", s2Parts, s2b.assignment(), s2b.revokedCount()-revoked)
	}
}
