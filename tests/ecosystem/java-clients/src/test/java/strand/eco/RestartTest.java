package strand.eco;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static strand.eco.Kit.*;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** The Java clients across a kill -9 and restart of the broker (same data dir and ports). */
class RestartTest {
    @RegisterExtension
    static final StrandBroker broker = new StrandBroker("--group-initial-rebalance-delay-ms", "500");

    Admin admin;

    @BeforeEach
    void setUp() {
        admin = admin(broker);
    }

    @AfterEach
    void tearDown() {
        admin.close(Duration.ofSeconds(5));
    }

    static void restart() throws Exception {
        broker.stop();
        broker.start();
    }

    @Test
    void idempotentProducerAcrossACrashDeliversEveryRecordOnceInOrder() throws Exception {
        String topic = name("crash");
        int partitions = 4;
        int n = 4000;
        createTopic(admin, topic, partitions, null);
        Map<Integer, List<String>> sent = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> p = producer(broker,
                ProducerConfig.LINGER_MS_CONFIG, 5,
                ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 90000,
                ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000,
                ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500)) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int part = i % partitions;
                String v = "r" + i;
                sent.computeIfAbsent(part, k -> new ArrayList<>()).add(v);
                fs.add(p.send(new ProducerRecord<>(topic, part, null, v.getBytes(StandardCharsets.UTF_8))));
                if (i == n / 4) {
                    fs.get(i).get(30, TimeUnit.SECONDS); // some acknowledged before the crash
                }
                if (i == n / 2) {
                    restart(); // with the latest batches in flight
                }
            }
            p.flush();
            Map<Integer, Long> last = new HashMap<>();
            for (int i = 0; i < n; i++) {
                RecordMetadata md = fs.get(i).get(60, TimeUnit.SECONDS);
                Long prev = last.put(md.partition(), md.offset());
                if (prev != null) {
                    assertEquals(prev + 1, md.offset(), "contiguous acknowledged offsets on " + md.partition());
                }
            }
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            List<TopicPartition> tps = partitions(topic, partitions);
            c.assign(tps);
            List<ConsumerRecord<byte[], byte[]>> rs = drain(c, tps);
            assertEquals(n, rs.size(), "every record once");
            var byPart = byPartition(rs);
            for (int part = 0; part < partitions; part++) {
                List<String> got = new ArrayList<>();
                byPart.get(new TopicPartition(topic, part)).forEach(r -> got.add(new String(r.value(), StandardCharsets.UTF_8)));
                assertEquals(sent.get(part), got, "partition " + part + " in send order, no duplicate");
            }
        }
    }

    @Test
    void committedOffsetsAndOpenTransactionSurviveARestart() throws Exception {
        String topic = name("durable");
        String group = name("g");
        createTopic(admin, topic, 2, null);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        KafkaProducer<byte[], byte[]> tx = producer(broker,
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, name("durable-tx"),
                ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 90000,
                ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000,
                ProducerConfig.MAX_BLOCK_MS_CONFIG, 60000);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.assign(List.of(p0, p1));
            c.commitSync(Map.of(p0, new OffsetAndMetadata(0, "m0"), p1, new OffsetAndMetadata(0, "m1")));
        }
        try {
            tx.initTransactions();
            tx.beginTransaction();
            for (int i = 0; i < 10; i++) {
                tx.send(new ProducerRecord<>(topic, i % 2, null, ("t" + i).getBytes(StandardCharsets.UTF_8)));
            }
            tx.flush();
            try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
                c.assign(List.of(p0));
                c.commitSync(Map.of(p0, new OffsetAndMetadata(3, "before-crash")));
            }

            restart();

            // The open transaction survived: it still holds back read_committed readers ...
            try (KafkaConsumer<byte[], byte[]> rc = consumer(broker, ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")) {
                await("metadata after restart", () -> {
                    try {
                        return rc.endOffsets(List.of(p0, p1), Duration.ofSeconds(5)).get(p0) == 0L;
                    } catch (Exception e) {
                        return false;
                    }
                });
            }
            // ... and the producer commits it after reconnecting.
            tx.commitTransaction();
        } finally {
            tx.close(Duration.ofSeconds(10));
        }
        try (KafkaConsumer<byte[], byte[]> rc = consumer(broker, ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed",
                ConsumerConfig.GROUP_ID_CONFIG, group)) {
            Map<TopicPartition, OffsetAndMetadata> committed = rc.committed(Set.of(p0, p1));
            assertEquals(3, committed.get(p0).offset(), "commit durable across the crash");
            assertEquals("before-crash", committed.get(p0).metadata());
            assertEquals(0, committed.get(p1).offset());
            assertEquals("m1", committed.get(p1).metadata());
            rc.assign(List.of(p0, p1));
            rc.seekToBeginning(List.of(p0, p1));
            Set<String> got = new HashSet<>();
            drain(rc, List.of(p0, p1)).forEach(r -> got.add(new String(r.value(), StandardCharsets.UTF_8)));
            assertEquals(10, got.size(), "the transaction committed after the restart: " + got);
        }
    }

    /** Produces 10 records ("a0".."a9"), reads and commits them in a group, then restarts the broker and produces "b0".."b9". */
    KafkaConsumer<byte[], byte[]> consumeCommitAndRestart(String topic, String group) throws Exception {
        createTopic(admin, topic, 2, null);
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, i % 2, null, ("a" + i).getBytes(StandardCharsets.UTF_8)));
            }
            p.flush();
        }
        KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000,
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500,
                ConsumerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);
        c.subscribe(List.of(topic));
        assertEquals(10, pollN(c, 10).size());
        c.commitSync();

        restart();

        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, i % 2, null, ("b" + i).getBytes(StandardCharsets.UTF_8)));
            }
            p.flush();
        }
        return c;
    }

    @Test
    void groupMembersRejoinAfterARestartAndCommitAgain() throws Exception {
        String topic = name("rejoin");
        String group = name("g");
        try (KafkaConsumer<byte[], byte[]> c = consumeCommitAndRestart(topic, group)) {
            // Poll and commit until everything new is read and committed; a commit refused while
            // the member rejoins is retried after the next poll, as an application would.
            Set<String> seen = new HashSet<>();
            boolean committed = false;
            List<TopicPartition> tps = partitions(topic, 2);
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    String v = new String(r.value(), StandardCharsets.UTF_8);
                    assertTrue(v.startsWith("b"), "records committed before the restart are not read again: " + v);
                    seen.add(v);
                }
                try {
                    c.commitSync(Duration.ofSeconds(10));
                    committed = true;
                    // Done once the commit covered everything (after a rejoin the positions go
                    // back to the last commit and the new records are read again).
                    if (c.assignment().containsAll(tps) && c.position(tps.get(0)) == 10L && c.position(tps.get(1)) == 10L) {
                        break;
                    }
                } catch (org.apache.kafka.clients.consumer.CommitFailedException
                         | org.apache.kafka.common.errors.RebalanceInProgressException e) {
                    committed = false;
                }
            }
            assertEquals(10, seen.size(), "every new record read: " + seen);
            assertTrue(committed, "a commit went through after the restart");
            Map<TopicPartition, OffsetAndMetadata> offsets = c.committed(new HashSet<>(partitions(topic, 2)));
            assertEquals(10, offsets.get(new TopicPartition(topic, 0)).offset());
            assertEquals(10, offsets.get(new TopicPartition(topic, 1)).offset());
            assertEquals(2, c.assignment().size());
        }
    }

    /**
     * Kafka keeps a group's members and generation in its offsets log, so a member's first
     * commit after a broker restart goes through. Strand keeps membership in memory: the
     * member's heartbeat and OffsetCommit (generation 1, its member id) answer
     * UNKNOWN_MEMBER_ID (25), and commitSync throws CommitFailedException; the consumer then
     * rejoins and reads the records it had already fetched again.
     */
    @Test
    @org.junit.jupiter.api.Disabled("Strand: group membership is not kept across a restart; the first "
            + "commitSync after it fails with CommitFailedException (OffsetCommit -> UNKNOWN_MEMBER_ID)")
    void firstCommitAfterARestartSucceeds() throws Exception {
        String topic = name("rejoin-strict");
        String group = name("g");
        try (KafkaConsumer<byte[], byte[]> c = consumeCommitAndRestart(topic, group)) {
            List<ConsumerRecord<byte[], byte[]>> after = pollN(c, 10, Duration.ofSeconds(60));
            for (ConsumerRecord<byte[], byte[]> r : after) {
                assertTrue(new String(r.value(), StandardCharsets.UTF_8).startsWith("b"));
            }
            c.commitSync(Duration.ofSeconds(30));
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(new HashSet<>(partitions(topic, 2)));
            assertEquals(10, committed.get(new TopicPartition(topic, 0)).offset());
            assertEquals(10, committed.get(new TopicPartition(topic, 1)).offset());
        }
    }
}
