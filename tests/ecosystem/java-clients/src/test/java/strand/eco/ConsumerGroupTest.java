package strand.eco;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static strand.eco.Kit.*;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Classic-protocol consumer groups, commits and positioning with the Java consumer. */
class ConsumerGroupTest {
    @RegisterExtension
    static final StrandBroker broker = new StrandBroker("--group-initial-rebalance-delay-ms", "500");

    static Admin admin;

    @BeforeAll
    static void setUp() {
        admin = admin(broker);
    }

    @AfterAll
    static void tearDown() {
        admin.close();
    }

    static void produce(String topic, int partitions, int perPartition) throws Exception {
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            for (int part = 0; part < partitions; part++) {
                for (int i = 0; i < perPartition; i++) {
                    p.send(new ProducerRecord<>(topic, part, null, (part + ":" + i).getBytes(StandardCharsets.UTF_8)));
                }
            }
            p.flush();
        }
    }

    static KafkaConsumer<byte[], byte[]> member(String group, String assignor) {
        return consumer(broker,
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000,
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500,
                ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, 30000);
    }

    /** Polls every consumer in turn (one thread) until each owns {@code each} partitions and together all of them. */
    static List<Set<TopicPartition>> awaitAssignment(List<KafkaConsumer<byte[], byte[]>> cs, int total, int each) {
        long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
        while (System.nanoTime() < deadline) {
            for (KafkaConsumer<byte[], byte[]> c : cs) {
                c.poll(Duration.ofMillis(100));
            }
            List<Set<TopicPartition>> got = new ArrayList<>();
            Set<TopicPartition> union = new HashSet<>();
            boolean ok = true;
            for (KafkaConsumer<byte[], byte[]> c : cs) {
                Set<TopicPartition> a = new HashSet<>(c.assignment());
                got.add(a);
                ok &= a.size() == each;
                union.addAll(a);
            }
            if (ok && union.size() == total) {
                return got;
            }
        }
        List<Set<TopicPartition>> last = new ArrayList<>();
        cs.forEach(c -> last.add(c.assignment()));
        fail("no balanced assignment of " + total + " partitions within 60s; last: " + last);
        return null;
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"org.apache.kafka.clients.consumer.RangeAssignor",
            "org.apache.kafka.clients.consumer.CooperativeStickyAssignor"})
    void threeConsumersBalancedThenOneLeavesAndItsPartitionsMove(String assignor) throws Exception {
        String topic = name("grp");
        String group = name("g");
        createTopic(admin, topic, 6, null);
        List<KafkaConsumer<byte[], byte[]>> cs = new ArrayList<>();
        try {
            for (int i = 0; i < 3; i++) {
                KafkaConsumer<byte[], byte[]> c = member(group, assignor);
                c.subscribe(List.of(topic));
                cs.add(c);
            }
            List<Set<TopicPartition>> before = awaitAssignment(cs, 6, 2);

            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get(30, TimeUnit.SECONDS);
            assertEquals(GroupState.STABLE, d.groupState());
            assertEquals(3, d.members().size());
            String expectedProtocol = assignor.equals(RangeAssignor.class.getName()) ? "range" : "cooperative-sticky";
            assertEquals(expectedProtocol, d.partitionAssignor());
            Set<Set<TopicPartition>> described = new HashSet<>();
            for (MemberDescription m : d.members()) {
                described.add(m.assignment().topicPartitions());
            }
            assertEquals(new HashSet<>(before), described, "the group's view of the assignment is the consumers'");

            Set<TopicPartition> leaverHad = before.get(2);
            cs.remove(2).close(Duration.ofSeconds(10)); // sends LeaveGroup
            List<Set<TopicPartition>> after = awaitAssignment(cs, 6, 3);
            Set<TopicPartition> gained = new HashSet<>(after.get(0));
            gained.addAll(after.get(1));
            assertTrue(gained.containsAll(leaverHad), "the leaver's partitions moved to the others");
            if (assignor.equals(CooperativeStickyAssignor.class.getName())) {
                assertTrue(after.get(0).containsAll(before.get(0)), "sticky: consumer 0 kept its partitions");
                assertTrue(after.get(1).containsAll(before.get(1)), "sticky: consumer 1 kept its partitions");
            }
            ConsumerGroupDescription d2 = admin.describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get(30, TimeUnit.SECONDS);
            assertEquals(2, d2.members().size());
        } finally {
            for (KafkaConsumer<byte[], byte[]> c : cs) {
                c.close(Duration.ofSeconds(5));
            }
        }
    }

    @Test
    void committedOffsetsAreHonouredOnRestart() throws Exception {
        String topic = name("commit");
        String group = name("g");
        int partitions = 2;
        int perPartition = 50;
        createTopic(admin, topic, partitions, null);
        produce(topic, partitions, perPartition);
        List<TopicPartition> tps = partitions(topic, partitions);

        Map<TopicPartition, Long> committedAt;
        Set<String> processedAndCommitted = new HashSet<>();
        try (KafkaConsumer<byte[], byte[]> a = consumer(broker,
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 7)) {
            a.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> processed = new ArrayList<>();
            long deadline = System.nanoTime() + TIMEOUT.toNanos();
            while (processed.size() < 30 && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : a.poll(Duration.ofMillis(200))) {
                    processed.add(r);
                }
            }
            assertTrue(processed.size() >= 30, "first consumer read records");
            // Commit exactly what was processed: the offset after each partition's last record.
            committedAt = new HashMap<>();
            for (ConsumerRecord<byte[], byte[]> r : processed) {
                committedAt.merge(new TopicPartition(r.topic(), r.partition()), r.offset() + 1, Math::max);
            }
            Map<TopicPartition, OffsetAndMetadata> toCommit = new HashMap<>();
            committedAt.forEach((tp, off) -> toCommit.put(tp, new OffsetAndMetadata(off)));
            a.commitSync(toCommit);
            processed.forEach(r -> processedAndCommitted.add(new String(r.value(), StandardCharsets.UTF_8)));
            Map<TopicPartition, OffsetAndMetadata> committed = a.committed(new HashSet<>(tps));
            for (TopicPartition tp : tps) {
                long expect = committedAt.getOrDefault(tp, -1L);
                if (expect < 0) {
                    assertNull(committed.get(tp));
                } else {
                    assertEquals(expect, committed.get(tp).offset(), "committed() of " + tp);
                }
            }
            // Read on without committing: those records must be delivered again after a restart.
            List<ConsumerRecord<byte[], byte[]>> uncommitted = pollN(a, 1);
            assertTrue(!uncommitted.isEmpty());
        }

        try (KafkaConsumer<byte[], byte[]> b = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            b.subscribe(List.of(topic));
            int remaining = partitions * perPartition - processedAndCommitted.size();
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(b, remaining);
            // Nothing more than the rest arrives.
            assertEquals(0, b.poll(Duration.ofMillis(500)).count());
            Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> byPart = byPartition(rs);
            for (TopicPartition tp : tps) {
                long start = committedAt.getOrDefault(tp, 0L);
                List<ConsumerRecord<byte[], byte[]>> l = byPart.getOrDefault(tp, List.of());
                assertEquals(perPartition - start, l.size(), "re-read of " + tp + " starts at the commit");
                if (!l.isEmpty()) {
                    assertEquals(start, l.get(0).offset(), "first offset re-read on " + tp);
                }
            }
            Set<String> all = new HashSet<>(processedAndCommitted);
            for (ConsumerRecord<byte[], byte[]> r : rs) {
                assertTrue(all.add(new String(r.value(), StandardCharsets.UTF_8)), "no committed record read twice");
            }
            assertEquals(partitions * perPartition, all.size(), "no record skipped");
        }
    }

    @Test
    void commitSyncAndCommitAsyncWithManualAssignment() throws Exception {
        String topic = name("async");
        String group = name("g");
        createTopic(admin, topic, 2, null);
        produce(topic, 2, 10);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.assign(List.of(p0, p1));
            Map<TopicPartition, OffsetAndMetadata> none = c.committed(Set.of(p0, p1));
            assertNull(none.get(p0), "nothing committed yet");
            assertNull(none.get(p1));

            c.commitSync(Map.of(p0, new OffsetAndMetadata(3, "sync-meta")));
            OffsetAndMetadata got = c.committed(Set.of(p0)).get(p0);
            assertEquals(3, got.offset());
            assertEquals("sync-meta", got.metadata());

            AtomicReference<Map<TopicPartition, OffsetAndMetadata>> cbOffsets = new AtomicReference<>();
            AtomicReference<Exception> cbError = new AtomicReference<>();
            c.commitAsync(Map.of(p0, new OffsetAndMetadata(7), p1, new OffsetAndMetadata(4, "async-meta")),
                    (offsets, e) -> {
                        cbError.set(e);
                        cbOffsets.set(offsets);
                    });
            await("commitAsync callback", () -> {
                c.poll(Duration.ofMillis(50));
                return cbOffsets.get() != null || cbError.get() != null;
            });
            assertNull(cbError.get());
            assertEquals(7, cbOffsets.get().get(p0).offset());
            Map<TopicPartition, OffsetAndMetadata> now = c.committed(Set.of(p0, p1));
            assertEquals(7, now.get(p0).offset());
            assertEquals(4, now.get(p1).offset());
            assertEquals("async-meta", now.get(p1).metadata());

            // commitAsync() with no arguments commits the positions after consumed records.
            c.seek(p0, 0);
            c.seek(p1, 0);
            List<ConsumerRecord<byte[], byte[]>> read = drain(c, List.of(p0, p1));
            assertEquals(java.util.Optional.of(0), read.get(0).leaderEpoch(), "batches carry the leader epoch");
            AtomicReference<Boolean> done = new AtomicReference<>();
            c.commitAsync((offsets, e) -> done.set(e == null));
            await("second commitAsync callback", () -> {
                c.poll(Duration.ofMillis(50));
                return done.get() != null;
            });
            assertTrue(done.get());
            now = c.committed(Set.of(p0, p1));
            assertEquals(10, now.get(p0).offset());
            assertEquals(10, now.get(p1).offset());
            assertEquals(java.util.Optional.of(0), now.get(p0).leaderEpoch(), "the committed leader epoch round-trips");
        }
        // Seen through the admin client as well.
        var viaAdmin = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        assertEquals(10, viaAdmin.get(p0).offset());
        assertEquals(10, viaAdmin.get(p1).offset());
    }

    @Test
    void seekPositionAndOffsetsForTimes() throws Exception {
        String topic = name("seek");
        createTopic(admin, topic, 1, null);
        TopicPartition tp = new TopicPartition(topic, 0);
        long t0 = System.currentTimeMillis() - 100_000;
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            for (int i = 0; i < 20; i++) {
                p.send(new ProducerRecord<>(topic, 0, t0 + i * 1000L, null, ("r" + i).getBytes(StandardCharsets.UTF_8)));
            }
            p.flush();
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            c.assign(List.of(tp));
            assertEquals(0L, c.beginningOffsets(List.of(tp)).get(tp));
            assertEquals(20L, c.endOffsets(List.of(tp)).get(tp));

            c.seekToEnd(List.of(tp));
            assertEquals(20, c.position(tp));
            assertEquals(0, c.poll(Duration.ofMillis(300)).count(), "nothing past the end");

            c.seekToBeginning(List.of(tp));
            assertEquals(0, c.position(tp));
            ConsumerRecord<byte[], byte[]> first = pollN(c, 1).get(0);
            assertEquals(0, first.offset());
            assertEquals(t0, first.timestamp());

            c.seek(tp, 7);
            assertEquals(7, c.position(tp));
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, 13);
            assertEquals(7, rs.get(0).offset());
            assertEquals("r7", new String(rs.get(0).value(), StandardCharsets.UTF_8));
            assertEquals(19, rs.get(rs.size() - 1).offset());
            assertEquals(20, c.position(tp));

            Map<TopicPartition, OffsetAndTimestamp> ts = c.offsetsForTimes(Map.of(tp, t0 + 5500));
            assertNotNull(ts.get(tp));
            assertEquals(6, ts.get(tp).offset(), "first record at or after the timestamp");
            assertEquals(t0 + 6000, ts.get(tp).timestamp());
            assertEquals(0, c.offsetsForTimes(Map.of(tp, t0 - 1)).get(tp).offset());
            assertEquals(19, c.offsetsForTimes(Map.of(tp, t0 + 19_000)).get(tp).offset());
            assertNull(c.offsetsForTimes(Map.of(tp, t0 + 19_001)).get(tp), "no record that late");

            // Seeking to an offsetsForTimes answer reads from there.
            c.seek(tp, ts.get(tp).offset());
            assertEquals("r6", new String(pollN(c, 1).get(0).value(), StandardCharsets.UTF_8));
        }
    }

    @Test
    void autoCommitCommitsConsumedPositions() throws Exception {
        // A group consumer with auto commit on commits what it consumed (the default mode).
        String topic = name("auto");
        String group = name("g");
        createTopic(admin, topic, 1, null);
        produce(topic, 1, 25);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker,
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "true",
                ConsumerConfig.AUTO_COMMIT_INTERVAL_MS_CONFIG, 200)) {
            c.subscribe(List.of(topic));
            int n = 0;
            long deadline = System.nanoTime() + TIMEOUT.toNanos();
            while (n < 25 && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(200));
                int it = 0;
                for (ConsumerRecord<byte[], byte[]> ignored : rs) {
                    it++;
                }
                assertEquals(rs.count(), it);
                n += it;
            }
            assertEquals(25, n);
            await("auto commit reaches 25", () -> {
                c.poll(Duration.ofMillis(100));
                OffsetAndMetadata o = c.committed(Set.of(tp)).get(tp);
                return o != null && o.offset() == 25;
            });
        }
    }

    @Test
    void staticMembersKeepTheirPartitionsAcrossARestartAndCanBeRemovedByAdmin() throws Exception {
        String topic = name("static");
        String group = name("g");
        createTopic(admin, topic, 4, null);
        String range = RangeAssignor.class.getName();
        KafkaConsumer<byte[], byte[]> a = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "inst-a",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, range,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 20000);
        KafkaConsumer<byte[], byte[]> b = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "inst-b",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, range,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 20000);
        KafkaConsumer<byte[], byte[]> a2 = null;
        try {
            a.subscribe(List.of(topic));
            b.subscribe(List.of(topic));
            List<Set<TopicPartition>> first = awaitAssignment(List.of(a, b), 4, 2);
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group)
                    .get(30, TimeUnit.SECONDS);
            Set<String> instances = new HashSet<>();
            d.members().forEach(m -> instances.add(m.groupInstanceId().orElse("")));
            assertEquals(Set.of("inst-a", "inst-b"), instances);

            // A static member does not leave the group on close: b keeps its partitions ...
            a.close(Duration.ofSeconds(5));
            a = null;
            for (int i = 0; i < 10; i++) {
                b.poll(Duration.ofMillis(100));
                assertEquals(first.get(1), b.assignment(), "b's assignment is untouched while a is away");
            }
            // ... and the restarted instance gets its old partitions back.
            a2 = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                    ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "inst-a",
                    ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, range,
                    ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 20000);
            a2.subscribe(List.of(topic));
            List<Set<TopicPartition>> again = awaitAssignment(List.of(a2, b), 4, 2);
            assertEquals(first.get(0), again.get(0), "the static member's partitions came back");
            assertEquals(first.get(1), again.get(1));

            // The admin client removes the (closed) static member: b takes everything.
            a2.close(Duration.ofSeconds(5));
            a2 = null;
            admin.removeMembersFromConsumerGroup(group, new org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions(
                    List.of(new org.apache.kafka.clients.admin.MemberToRemove("inst-a")))).all().get(30, TimeUnit.SECONDS);
            awaitAssignment(List.of(b), 4, 4);
        } finally {
            for (KafkaConsumer<byte[], byte[]> c : new KafkaConsumer[] {a, a2, b}) {
                if (c != null) {
                    c.close(Duration.ofSeconds(5));
                }
            }
        }
    }

    @Test
    void pauseAndResume() throws Exception {
        String topic = name("pause");
        createTopic(admin, topic, 2, null);
        produce(topic, 2, 5);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            c.assign(List.of(p0, p1));
            c.pause(List.of(p0));
            assertEquals(Set.of(p0), c.paused());
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, 5);
            assertTrue(rs.stream().allMatch(r -> r.partition() == 1), "only the unpaused partition");
            assertEquals(0, c.poll(Duration.ofMillis(500)).count(), "nothing from the paused partition");
            assertEquals(0, c.position(p0));
            c.resume(List.of(p0));
            rs = pollN(c, 5);
            assertTrue(rs.stream().allMatch(r -> r.partition() == 0));
            assertEquals(5, c.position(p0));
        }
    }

    @Test
    void adminAltersOffsetsOfAnEmptyGroupAndRefusesToDeleteAnActiveOne() throws Exception {
        String topic = name("alter");
        String group = name("g");
        createTopic(admin, topic, 1, null);
        produce(topic, 1, 10);
        TopicPartition tp = new TopicPartition(topic, 0);
        admin.alterConsumerGroupOffsets(group, Map.of(tp, new OffsetAndMetadata(6))).all().get(30, TimeUnit.SECONDS);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, 4);
            assertEquals(6, rs.get(0).offset(), "starts at the offset the admin set");
            assertEquals(9, rs.get(3).offset());

            Throwable t = assertThrows(java.util.concurrent.ExecutionException.class,
                    () -> admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS)).getCause();
            assertTrue(t instanceof org.apache.kafka.common.errors.GroupNotEmptyException, "got " + t);

            // Altering the offsets of an active group is refused too.
            t = assertThrows(java.util.concurrent.ExecutionException.class,
                    () -> admin.alterConsumerGroupOffsets(group, Map.of(tp, new OffsetAndMetadata(0))).all()
                            .get(30, TimeUnit.SECONDS)).getCause();
            assertTrue(t instanceof org.apache.kafka.common.errors.UnknownMemberIdException
                    || t instanceof org.apache.kafka.common.errors.IllegalGenerationException
                    || t instanceof org.apache.kafka.common.errors.RebalanceInProgressException, "got " + t);
        }
    }

    @Test
    void listGroupsShowsClassicConsumerGroups() throws Exception {
        String topic = name("lg");
        String group = name("g");
        createTopic(admin, topic, 1, null);
        produce(topic, 1, 1);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.subscribe(List.of(topic));
            pollN(c, 1);
            var listed = admin.listGroups().all().get(30, TimeUnit.SECONDS);
            var mine = listed.stream().filter(l -> l.groupId().equals(group)).findFirst().orElse(null);
            assertNotNull(mine, "listed: " + listed);
            assertEquals("consumer", mine.protocol());
            assertEquals(java.util.Optional.of(GroupState.STABLE), mine.groupState());
            var stable = admin.listGroups(new org.apache.kafka.clients.admin.ListGroupsOptions()
                    .inGroupStates(Set.of(GroupState.EMPTY))).all().get(30, TimeUnit.SECONDS);
            assertTrue(stable.stream().noneMatch(l -> l.groupId().equals(group)), "state filter applied: " + stable);
        }
    }

    @Test
    void cooperativeJoinRevokesOnlyWhatMoves() throws Exception {
        String topic = name("coop");
        String group = name("g");
        createTopic(admin, topic, 4, null);
        String coop = CooperativeStickyAssignor.class.getName();
        Set<TopicPartition> revokedFromFirst = java.util.concurrent.ConcurrentHashMap.newKeySet();
        KafkaConsumer<byte[], byte[]> a = member(group, coop);
        KafkaConsumer<byte[], byte[]> b = member(group, coop);
        try {
            a.subscribe(List.of(topic), new org.apache.kafka.clients.consumer.ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(java.util.Collection<TopicPartition> partitions) {
                    revokedFromFirst.addAll(partitions);
                }

                @Override
                public void onPartitionsAssigned(java.util.Collection<TopicPartition> partitions) {
                }
            });
            awaitAssignment(List.of(a), 4, 4);
            Set<TopicPartition> all = new HashSet<>(a.assignment());
            b.subscribe(List.of(topic));
            List<Set<TopicPartition>> after = awaitAssignment(List.of(a, b), 4, 2);
            assertEquals(after.get(1), revokedFromFirst, "exactly the partitions that moved were revoked");
            Set<TopicPartition> kept = new HashSet<>(all);
            kept.removeAll(revokedFromFirst);
            assertEquals(after.get(0), kept);
        } finally {
            a.close(Duration.ofSeconds(5));
            b.close(Duration.ofSeconds(5));
        }
    }

    @Test
    void patternSubscriptionPicksUpNewTopics() throws Exception {
        String prefix = name("pat");
        String group = name("g");
        createTopic(admin, prefix + "-one", 1, null);
        try (KafkaProducer<byte[], byte[]> p = producer(broker);
             KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                     ConsumerConfig.METADATA_MAX_AGE_CONFIG, 1000)) {
            p.send(new ProducerRecord<>(prefix + "-one", 0, null, "1".getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS);
            c.subscribe(java.util.regex.Pattern.compile(java.util.regex.Pattern.quote(prefix) + "-.*"));
            assertEquals(prefix + "-one", pollN(c, 1).get(0).topic());
            // Committed, so the rebalance that the new topic brings does not re-read it.
            c.commitSync();
            createTopic(admin, prefix + "-two", 1, null);
            p.send(new ProducerRecord<>(prefix + "-two", 0, null, "2".getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS);
            ConsumerRecord<byte[], byte[]> r = pollN(c, 1, Duration.ofSeconds(45)).get(0);
            assertEquals(prefix + "-two", r.topic(), "the new matching topic is consumed");
            assertEquals(Set.of(new TopicPartition(prefix + "-one", 0), new TopicPartition(prefix + "-two", 0)), c.assignment());
        }
    }

    @Test
    void memberThatStopsPollingLosesItsPartitions() throws Exception {
        String topic = name("slow");
        String group = name("g");
        createTopic(admin, topic, 2, null);
        String range = RangeAssignor.class.getName();
        KafkaConsumer<byte[], byte[]> slow = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, range,
                ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, 3000,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000,
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500);
        KafkaConsumer<byte[], byte[]> live = member(group, range);
        try {
            slow.subscribe(List.of(topic));
            live.subscribe(List.of(topic));
            awaitAssignment(List.of(slow, live), 2, 1);
            // slow stops calling poll: after max.poll.interval.ms it leaves and live gets both.
            awaitAssignment(List.of(live), 2, 2);
            Throwable t = assertThrows(org.apache.kafka.clients.consumer.CommitFailedException.class, () -> slow.commitSync());
            assertNotNull(t);
        } finally {
            slow.close(Duration.ofSeconds(5));
            live.close(Duration.ofSeconds(5));
        }
    }

    @Test
    void offsetMetadataTooLargeIsRefused() throws Exception {
        String topic = name("meta");
        String group = name("g");
        createTopic(admin, topic, 1, null);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.assign(List.of(tp));
            String ok = "m".repeat(4096);
            c.commitSync(Map.of(tp, new OffsetAndMetadata(1, ok)));
            assertEquals(ok, c.committed(Set.of(tp)).get(tp).metadata());
            assertThrows(org.apache.kafka.common.errors.OffsetMetadataTooLarge.class,
                    () -> c.commitSync(Map.of(tp, new OffsetAndMetadata(2, "m".repeat(4097)))));
            assertEquals(1, c.committed(Set.of(tp)).get(tp).offset(), "the refused commit changed nothing");
        }
    }

    @Test
    void aSecondStaticMemberWithTheSameInstanceIdFencesTheFirst() throws Exception {
        String topic = name("fenced");
        String group = name("g");
        createTopic(admin, topic, 2, null);
        String range = RangeAssignor.class.getName();
        KafkaConsumer<byte[], byte[]> first = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "same",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, range,
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 300);
        KafkaConsumer<byte[], byte[]> second = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "same",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, range,
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 300);
        try {
            first.subscribe(List.of(topic));
            awaitAssignment(List.of(first), 2, 2);
            second.subscribe(List.of(topic));
            awaitAssignment(List.of(second), 2, 2);
            // The first instance learns it was replaced: FENCED_INSTANCE_ID on its next request.
            Throwable fenced = null;
            long deadline = System.nanoTime() + TIMEOUT.toNanos();
            while (fenced == null && System.nanoTime() < deadline) {
                try {
                    first.poll(Duration.ofMillis(100));
                    first.commitSync(Duration.ofSeconds(5));
                } catch (org.apache.kafka.common.errors.FencedInstanceIdException e) {
                    fenced = e;
                } catch (org.apache.kafka.clients.consumer.CommitFailedException e) {
                    // The heartbeat thread saw FENCED_INSTANCE_ID between poll and commit and
                    // reset the generation; the next poll raises the fencing.
                    continue;
                } catch (org.apache.kafka.common.KafkaException e) {
                    if (e.getCause() instanceof org.apache.kafka.common.errors.FencedInstanceIdException) {
                        fenced = e.getCause();
                    } else {
                        throw e;
                    }
                }
            }
            assertNotNull(fenced, "the replaced static member is fenced");
            assertEquals(2, second.assignment().size());
        } finally {
            try {
                first.close(Duration.ofSeconds(2));
            } catch (org.apache.kafka.common.KafkaException ignored) {
                // a fenced consumer may throw on close
            }
            second.close(Duration.ofSeconds(5));
        }
    }

    @Test
    void membersWithDifferentSubscriptionsGetOnlyTheirTopics() throws Exception {
        String t1 = name("sub1");
        String t2 = name("sub2");
        String group = name("g");
        createTopic(admin, t1, 2, null);
        createTopic(admin, t2, 2, null);
        String range = RangeAssignor.class.getName();
        KafkaConsumer<byte[], byte[]> both = member(group, range);
        KafkaConsumer<byte[], byte[]> only1 = member(group, range);
        try {
            both.subscribe(List.of(t1, t2));
            only1.subscribe(List.of(t1));
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (System.nanoTime() < deadline) {
                both.poll(Duration.ofMillis(100));
                only1.poll(Duration.ofMillis(100));
                if (both.assignment().size() == 3 && only1.assignment().size() == 1) {
                    break;
                }
            }
            assertEquals(1, only1.assignment().size(), "only1: " + only1.assignment());
            assertEquals(t1, only1.assignment().iterator().next().topic());
            assertEquals(3, both.assignment().size(), "both: " + both.assignment());
            Set<TopicPartition> union = new HashSet<>(both.assignment());
            union.addAll(only1.assignment());
            assertEquals(4, union.size());
        } finally {
            both.close(Duration.ofSeconds(5));
            only1.close(Duration.ofSeconds(5));
        }
    }

    @Test
    void newGroupWithAutoOffsetResetLatestStartsAtTheEnd() throws Exception {
        String topic = name("latest");
        String group = name("g");
        createTopic(admin, topic, 1, null);
        produce(topic, 1, 5);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest")) {
            c.subscribe(List.of(topic));
            TopicPartition tp = new TopicPartition(topic, 0);
            await("assigned and positioned", () -> {
                c.poll(Duration.ofMillis(100));
                return c.assignment().contains(tp) && c.position(tp) == 5L;
            });
            produce(topic, 1, 1);
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, 1);
            assertEquals(5, rs.get(0).offset(), "only the record produced after joining");
        }
    }

    @Test
    void fetchPastTheEndResetsByPolicyAndEmptyPartitionsHaveNoTimestampOffsets() throws Exception {
        String topic = name("past");
        createTopic(admin, topic, 2, null);
        produce(topic, 1, 5); // partition 0 only; partition 1 stays empty
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest")) {
            c.assign(List.of(p0));
            c.seek(p0, 100);
            ConsumerRecord<byte[], byte[]> r = pollN(c, 1).get(0);
            assertEquals(0, r.offset(), "OFFSET_OUT_OF_RANGE past the end resets to earliest");
            assertNull(c.offsetsForTimes(Map.of(p1, 0L)).get(p1), "no record in an empty partition");
            assertEquals(0L, c.endOffsets(List.of(p1)).get(p1));
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest")) {
            c.assign(List.of(p0));
            c.seek(p0, 100);
            await("reset to latest", () -> {
                c.poll(Duration.ofMillis(100));
                return c.position(p0) == 5L;
            });
        }
    }

    /** The range assignor, counting how often this client computed a group assignment. */
    public static class CountingRangeAssignor extends RangeAssignor {
        static final java.util.concurrent.atomic.AtomicInteger ASSIGNMENTS = new java.util.concurrent.atomic.AtomicInteger();

        @Override
        public GroupAssignment assign(org.apache.kafka.common.Cluster metadata, GroupSubscription groupSubscription) {
            ASSIGNMENTS.incrementAndGet();
            return super.assign(metadata, groupSubscription);
        }
    }

    /**
     * KIP-814: a static leader that comes back to a Stable group with unchanged metadata gets
     * JoinGroup v9 with skip_assignment = true (Kafka's GroupMetadataManager), so it does not
     * run the assignor; the group keeps its assignment without a rebalance. Strand answers
     * leader = the new member id, the member list and skip_assignment = false, so the client
     * computes an assignment (which the Stable group's SyncGroup then ignores).
     */
    @Test
    @org.junit.jupiter.api.Disabled("Strand: JoinGroup v9 for a static leader rejoining a Stable group answers "
            + "skip_assignment=false (Kafka: true, KIP-814), so the client runs its assignor again")
    void rejoiningStaticLeaderSkipsTheAssignment() throws Exception {
        String topic = name("skip");
        String group = name("g");
        createTopic(admin, topic, 2, null);
        CountingRangeAssignor.ASSIGNMENTS.set(0);
        Object[] cfg = {ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "leader",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, List.of(CountingRangeAssignor.class),
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 20000};
        KafkaConsumer<byte[], byte[]> first = consumer(broker, cfg);
        first.subscribe(List.of(topic));
        Set<TopicPartition> before = awaitAssignment(List.of(first), 2, 2).get(0);
        assertEquals(1, CountingRangeAssignor.ASSIGNMENTS.get());
        first.close(Duration.ofSeconds(5)); // a static member stays in the group
        try (KafkaConsumer<byte[], byte[]> again = consumer(broker, cfg)) {
            again.subscribe(List.of(topic));
            Set<TopicPartition> after = awaitAssignment(List.of(again), 2, 2).get(0);
            assertEquals(before, after);
            assertEquals(1, CountingRangeAssignor.ASSIGNMENTS.get(), "no second assignment by the rejoining leader");
        }
    }
}
