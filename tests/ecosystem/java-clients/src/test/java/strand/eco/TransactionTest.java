package strand.eco;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static strand.eco.Kit.*;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** Transactional producers and read_committed consumers with the Java client. */
class TransactionTest {
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

    static KafkaProducer<byte[], byte[]> txProducer(String txId) {
        return producer(broker,
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, txId,
                ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 60000);
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String s(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }

    static List<String> values(List<ConsumerRecord<byte[], byte[]>> rs) {
        List<String> l = new ArrayList<>();
        rs.forEach(r -> l.add(s(r.value())));
        return l;
    }

    static List<ConsumerRecord<byte[], byte[]>> readAll(String topic, int partitions, String isolation) {
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation)) {
            List<TopicPartition> tps = partitions(topic, partitions);
            c.assign(tps);
            c.seekToBeginning(tps);
            return drain(c, tps);
        }
    }

    @Test
    void commitAndAbortReadCommittedSeesOnlyCommitted() throws Exception {
        String topic = name("tx");
        createTopic(admin, topic, 2, null);
        try (KafkaProducer<byte[], byte[]> p = txProducer(name("txid"))) {
            p.initTransactions();

            p.beginTransaction();
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, i % 2, null, b("c1-" + i)));
            }
            p.commitTransaction();

            p.beginTransaction();
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, i % 2, null, b("a1-" + i)));
            }
            p.flush(); // the aborted records are in the log before the abort
            p.abortTransaction();

            p.beginTransaction();
            for (int i = 0; i < 6; i++) {
                p.send(new ProducerRecord<>(topic, i % 2, null, b("c2-" + i)));
            }
            p.commitTransaction();
        }

        List<String> committed = values(readAll(topic, 2, "read_committed"));
        assertEquals(16, committed.size(), "read_committed: " + committed);
        assertTrue(committed.stream().noneMatch(v -> v.startsWith("a1-")), "no aborted record: " + committed);
        for (int i = 0; i < 10; i++) {
            assertTrue(committed.contains("c1-" + i));
        }
        for (int i = 0; i < 6; i++) {
            assertTrue(committed.contains("c2-" + i));
        }
        // read_uncommitted also returns the aborted records (control records are never returned).
        List<String> all = values(readAll(topic, 2, "read_uncommitted"));
        assertEquals(26, all.size(), "read_uncommitted: " + all);

        // Each transaction ends with a control record taking an offset: 3 markers per partition.
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            Map<TopicPartition, Long> end = c.endOffsets(partitions(topic, 2));
            assertEquals(5 + 5 + 3 + 3, end.get(new TopicPartition(topic, 0)));
            assertEquals(5 + 5 + 3 + 3, end.get(new TopicPartition(topic, 1)));
        }
    }

    @Test
    void readCommittedWaitsForAnOpenTransaction() throws Exception {
        String topic = name("open");
        createTopic(admin, topic, 1, null);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<byte[], byte[]> p = txProducer(name("txid"));
             KafkaConsumer<byte[], byte[]> rc = consumer(broker, ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
             KafkaConsumer<byte[], byte[]> ru = consumer(broker, ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_uncommitted")) {
            p.initTransactions();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, b("pending")));
            p.flush();
            rc.assign(List.of(tp));
            ru.assign(List.of(tp));
            assertEquals("pending", s(pollN(ru, 1).get(0).value()), "read_uncommitted sees the open transaction");
            assertEquals(0, rc.poll(Duration.ofMillis(1000)).count(), "read_committed does not");
            assertEquals(0L, rc.endOffsets(List.of(tp)).get(tp), "read_committed end offset is the LSO");
            assertEquals(1L, ru.endOffsets(List.of(tp)).get(tp), "read_uncommitted end offset is the high watermark");
            p.commitTransaction();
            assertEquals("pending", s(pollN(rc, 1).get(0).value()), "visible once committed");
            assertEquals(2L, rc.endOffsets(List.of(tp)).get(tp));
        }
    }

    @Test
    void consumeTransformProduceCommitsOffsetsWithTheTransaction() throws Exception {
        String in = name("in");
        String out = name("out");
        String group = name("ctp");
        createTopic(admin, in, 2, null);
        createTopic(admin, out, 2, null);
        int n = 40;
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            for (int i = 0; i < n; i++) {
                p.send(new ProducerRecord<>(in, i % 2, null, b("m" + i)));
            }
            p.flush();
        }
        List<TopicPartition> inTps = partitions(in, 2);

        try (KafkaConsumer<byte[], byte[]> c = consumer(broker,
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed",
                ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 15);
             KafkaProducer<byte[], byte[]> p = txProducer(name("ctp-tx"))) {
            p.initTransactions();
            c.subscribe(List.of(in));

            // One transaction that is aborted: its output and offsets must vanish.
            List<ConsumerRecord<byte[], byte[]>> first = pollN(c, 1);
            p.beginTransaction();
            Map<TopicPartition, OffsetAndMetadata> abortedOffsets = new HashMap<>();
            for (ConsumerRecord<byte[], byte[]> r : first) {
                p.send(new ProducerRecord<>(out, r.partition(), null, b("ABORTED-" + s(r.value()))));
                abortedOffsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
            }
            p.sendOffsetsToTransaction(abortedOffsets, c.groupMetadata());
            p.abortTransaction();
            Map<TopicPartition, OffsetAndMetadata> afterAbort = c.committed(Set.copyOf(inTps));
            for (TopicPartition tp : inTps) {
                assertNull(afterAbort.get(tp), "aborted transaction committed no offset for " + tp);
            }
            // Rewind to what is committed (nothing: the beginning) as an application would.
            for (TopicPartition tp : c.assignment()) {
                c.seek(tp, 0);
            }

            int transformed = 0;
            int transactions = 0;
            long deadline = System.nanoTime() + TIMEOUT.toNanos();
            while (transformed < n && System.nanoTime() < deadline) {
                var rs = c.poll(Duration.ofMillis(200));
                if (rs.isEmpty()) {
                    continue;
                }
                p.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    p.send(new ProducerRecord<>(out, r.partition(), null, b(s(r.value()).toUpperCase())));
                    offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    transformed++;
                }
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                p.commitTransaction();
                transactions++;
            }
            assertEquals(n, transformed);
            assertTrue(transactions >= 2, "several transactions");

            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.copyOf(inTps));
            for (TopicPartition tp : inTps) {
                assertNotNull(committed.get(tp), "offset committed by the transaction for " + tp);
                assertEquals(n / 2, committed.get(tp).offset());
            }
        }
        var viaAdmin = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        for (TopicPartition tp : inTps) {
            assertEquals(n / 2, viaAdmin.get(tp).offset(), "admin sees the transaction's offsets for " + tp);
        }
        List<String> output = values(readAll(out, 2, "read_committed"));
        assertEquals(n, output.size(), "output: " + output);
        for (int i = 0; i < n; i++) {
            assertTrue(output.contains("M" + i), "transformed M" + i);
        }
        assertTrue(output.stream().noneMatch(v -> v.startsWith("ABORTED-")));
    }

    @Test
    void secondProducerWithSameTransactionalIdFencesTheFirst() throws Exception {
        String topic = name("fence");
        String txId = name("fence-tx");
        createTopic(admin, topic, 1, null);
        KafkaProducer<byte[], byte[]> first = txProducer(txId);
        try (KafkaProducer<byte[], byte[]> second = txProducer(txId)) {
            first.initTransactions();
            first.beginTransaction();
            first.send(new ProducerRecord<>(topic, 0, null, b("zombie-1"))).get(30, TimeUnit.SECONDS);

            // The new instance aborts the zombie's open transaction and bumps the epoch.
            second.initTransactions();

            Throwable fenced = null;
            try {
                first.send(new ProducerRecord<>(topic, 0, null, b("zombie-2"))).get(30, TimeUnit.SECONDS);
                first.commitTransaction();
            } catch (ExecutionException e) {
                fenced = e.getCause();
            } catch (KafkaException e) {
                fenced = e;
            }
            assertNotNull(fenced, "the first producer must be fenced");
            assertTrue(isFencing(fenced), "fenced with ProducerFenced/InvalidProducerEpoch, got " + fenced);

            second.beginTransaction();
            second.send(new ProducerRecord<>(topic, 0, null, b("new-1")));
            second.commitTransaction();
        } finally {
            first.close(Duration.ofSeconds(5));
        }
        List<String> committed = values(readAll(topic, 1, "read_committed"));
        assertEquals(List.of("new-1"), committed, "only the new instance's transaction is visible");
    }

    static boolean isFencing(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof ProducerFencedException || c instanceof InvalidProducerEpochException) {
                return true;
            }
        }
        return false;
    }

    @Test
    void fencedProducerCannotCommitEvenWithoutSending() throws Exception {
        String txId = name("fence2-tx");
        String topic = name("fence2");
        createTopic(admin, topic, 1, null);
        KafkaProducer<byte[], byte[]> first = txProducer(txId);
        try (KafkaProducer<byte[], byte[]> second = txProducer(txId)) {
            first.initTransactions();
            second.initTransactions();
            try {
                first.beginTransaction();
                first.send(new ProducerRecord<>(topic, 0, null, b("zombie"))).get(30, TimeUnit.SECONDS);
                first.commitTransaction();
                fail("a fenced producer committed");
            } catch (ExecutionException e) {
                assertTrue(isFencing(e.getCause()), "got " + e.getCause());
            } catch (KafkaException e) {
                assertTrue(isFencing(e), "got " + e);
            }
        } finally {
            first.close(Duration.ofSeconds(5));
        }
        assertEquals(List.of(), values(readAll(topic, 1, "read_committed")));
    }

    @Test
    void transactionTimeoutAboveTheMaximumIsRefused() {
        try (KafkaProducer<byte[], byte[]> p = producer(broker,
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, name("too-long"),
                ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 16 * 60 * 1000)) {
            KafkaException e = org.junit.jupiter.api.Assertions.assertThrows(KafkaException.class, p::initTransactions);
            // The client reports INVALID_TRANSACTION_TIMEOUT (50) from InitProducerId as an
            // "unexpected error" carrying the error's message (as against Kafka).
            boolean invalidTimeout = false;
            for (Throwable c = e; c != null; c = c.getCause()) {
                invalidTimeout |= c instanceof org.apache.kafka.common.errors.InvalidTxnTimeoutException
                        || (c.getMessage() != null && c.getMessage().contains(
                                org.apache.kafka.common.protocol.Errors.INVALID_TRANSACTION_TIMEOUT.message()));
            }
            assertTrue(invalidTimeout, "InvalidTxnTimeoutException, got " + e);
        }
    }

    @Test
    void coordinatorAbortsATransactionThatOutlivesItsTimeout() throws Exception {
        String topic = name("expire");
        createTopic(admin, topic, 1, null);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<byte[], byte[]> p = producer(broker,
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, name("expire-tx"),
                ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 2000);
             KafkaConsumer<byte[], byte[]> rc = consumer(broker, ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")) {
            p.initTransactions();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, b("late"))).get(30, TimeUnit.SECONDS);
            rc.assign(List.of(tp));
            assertEquals(0L, rc.endOffsets(List.of(tp)).get(tp));
            // The coordinator aborts it: the abort marker makes the partition stable again.
            await("transaction aborted by the coordinator", Duration.ofSeconds(60),
                    () -> rc.endOffsets(List.of(tp)).get(tp) == 2L);
            assertEquals(0, rc.poll(Duration.ofMillis(500)).count(), "the aborted record stays invisible");
            Throwable fenced = null;
            try {
                p.send(new ProducerRecord<>(topic, 0, null, b("later"))).get(30, TimeUnit.SECONDS);
                p.commitTransaction();
            } catch (ExecutionException e) {
                fenced = e.getCause();
            } catch (KafkaException e) {
                fenced = e;
            }
            assertNotNull(fenced, "the late producer cannot commit");
            assertTrue(isFencing(fenced), "fenced, got " + fenced);
        }
        assertEquals(List.of(), values(readAll(topic, 1, "read_committed")));
    }

    @Test
    void adminDescribesAndListsTransactionsAndProducers() throws Exception {
        String topic = name("dtx");
        String txId = name("dtx-id");
        createTopic(admin, topic, 2, null);
        try (KafkaProducer<byte[], byte[]> p = txProducer(txId)) {
            p.initTransactions();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, b("a")));
            p.send(new ProducerRecord<>(topic, 0, null, b("b")));
            p.send(new ProducerRecord<>(topic, 1, null, b("c")));
            p.flush();

            var desc = admin.describeTransactions(List.of(txId)).description(txId).get(30, TimeUnit.SECONDS);
            assertEquals(org.apache.kafka.clients.admin.TransactionState.ONGOING, desc.state());
            assertEquals(Set.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1)), desc.topicPartitions());
            assertEquals(60000L, desc.transactionTimeoutMs());
            assertTrue(desc.producerId() >= 0);
            assertTrue(desc.transactionStartTimeMs().isPresent());

            var listed = admin.listTransactions().all().get(30, TimeUnit.SECONDS);
            var mine = listed.stream().filter(l -> l.transactionalId().equals(txId)).findFirst().orElse(null);
            assertNotNull(mine, "listed: " + listed);
            assertEquals(desc.producerId(), mine.producerId());
            assertEquals(org.apache.kafka.clients.admin.TransactionState.ONGOING, mine.state());

            var producers = admin.describeProducers(List.of(new TopicPartition(topic, 0))).partitionResult(
                    new TopicPartition(topic, 0)).get(30, TimeUnit.SECONDS).activeProducers();
            assertEquals(1, producers.size());
            assertEquals(desc.producerId(), producers.get(0).producerId());
            assertEquals(desc.producerEpoch(), producers.get(0).producerEpoch());
            assertEquals(java.util.OptionalLong.of(0), producers.get(0).currentTransactionStartOffset());
            assertEquals(1, producers.get(0).lastSequence());

            p.commitTransaction();
            await("CompleteCommit", () -> {
                try {
                    return admin.describeTransactions(List.of(txId)).description(txId).get().state()
                            == org.apache.kafka.clients.admin.TransactionState.COMPLETE_COMMIT;
                } catch (Exception e) {
                    return false;
                }
            });
            var after = admin.describeProducers(List.of(new TopicPartition(topic, 0))).partitionResult(
                    new TopicPartition(topic, 0)).get(30, TimeUnit.SECONDS).activeProducers();
            assertEquals(java.util.OptionalLong.empty(), after.get(0).currentTransactionStartOffset());
        }
    }

    @Test
    void staleGroupGenerationInSendOffsetsToTransactionFailsTheCommit() throws Exception {
        String in = name("stale-in");
        String group = name("stale-g");
        createTopic(admin, in, 2, null);
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            for (int i = 0; i < 4; i++) {
                p.send(new ProducerRecord<>(in, i % 2, null, b("x" + i)));
            }
            p.flush();
        }
        TopicPartition tp = new TopicPartition(in, 0);
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
             KafkaProducer<byte[], byte[]> p = txProducer(name("stale-tx"))) {
            c.subscribe(List.of(in));
            pollN(c, 1);
            var meta = c.groupMetadata();
            assertTrue(meta.generationId() > 0);
            // A forged, stale view of the group: the generation before the current one.
            var stale = new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group, meta.generationId() - 1,
                    meta.memberId(), meta.groupInstanceId());
            p.initTransactions();
            p.beginTransaction();
            Throwable t = null;
            try {
                p.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(1)), stale);
                p.commitTransaction();
            } catch (KafkaException e) {
                t = e;
            }
            assertNotNull(t, "a stale generation must not commit offsets");
            boolean commitFailed = false;
            for (Throwable x = t; x != null; x = x.getCause()) {
                commitFailed |= x instanceof org.apache.kafka.clients.consumer.CommitFailedException
                        || x instanceof org.apache.kafka.common.errors.IllegalGenerationException;
            }
            assertTrue(commitFailed, "CommitFailedException (ILLEGAL_GENERATION), got " + t);
            p.abortTransaction();
            assertNull(c.committed(Set.of(tp)).get(tp), "no offset committed");
        }
    }

    @Test
    void readCommittedConsumerWaitsForPendingTransactionalOffsets() throws Exception {
        String in = name("pend-in");
        String group = name("pend-g");
        createTopic(admin, in, 1, null);
        TopicPartition tp = new TopicPartition(in, 0);
        try (KafkaProducer<byte[], byte[]> p = txProducer(name("pend-tx"));
             KafkaConsumer<byte[], byte[]> c = consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                     ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")) {
            p.initTransactions();
            p.beginTransaction();
            p.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(5, "tx")),
                    new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group));
            p.flush();
            // While the transaction is open the offset is unstable: require_stable OffsetFetch
            // answers UNSTABLE_OFFSET_COMMIT and the consumer keeps asking until its timeout.
            org.junit.jupiter.api.Assertions.assertThrows(org.apache.kafka.common.errors.TimeoutException.class,
                    () -> c.committed(Set.of(tp), Duration.ofSeconds(2)));
            p.commitTransaction();
            OffsetAndMetadata o = c.committed(Set.of(tp), Duration.ofSeconds(30)).get(tp);
            assertNotNull(o);
            assertEquals(5, o.offset());
            assertEquals("tx", o.metadata());
        }
    }

    @Test
    void transactionsOverManyPartitionsAndGroupsOnBothShards() throws Exception {
        // Transactional ids and groups hash to either shard; with several of each, the
        // coordinators, the group and the partitions sit on different shards.
        String out = name("wide");
        createTopic(admin, out, 6, null);
        int rounds = 4;
        for (int k = 0; k < rounds; k++) {
            String group = name("wide-g" + k);
            try (KafkaProducer<byte[], byte[]> p = txProducer(name("wide-tx" + k))) {
                p.initTransactions();
                p.beginTransaction();
                for (int part = 0; part < 6; part++) {
                    p.send(new ProducerRecord<>(out, part, null, b("k" + k + "p" + part)));
                }
                p.sendOffsetsToTransaction(Map.of(new TopicPartition(out, 0), new OffsetAndMetadata(k + 1)),
                        new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group));
                if (k % 2 == 0) {
                    p.commitTransaction();
                } else {
                    p.abortTransaction();
                }
            }
            var offsets = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            if (k % 2 == 0) {
                assertEquals(k + 1, offsets.get(new TopicPartition(out, 0)).offset(), "group " + group);
            } else {
                assertTrue(offsets.get(new TopicPartition(out, 0)) == null, "aborted: no offset for " + group);
            }
        }
        List<String> got = values(readAll(out, 6, "read_committed"));
        assertEquals(12, got.size(), "two committed rounds of 6: " + got);
        assertTrue(got.stream().allMatch(v -> v.startsWith("k0") || v.startsWith("k2")), got.toString());
    }

    @Test
    void compressedTransactionalBatchesAreFilteredByReadCommitted() throws Exception {
        String topic = name("txcomp");
        createTopic(admin, topic, 1, null);
        try (KafkaProducer<byte[], byte[]> p = producer(broker,
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, name("txcomp-id"),
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd",
                ProducerConfig.LINGER_MS_CONFIG, 20)) {
            p.initTransactions();
            for (int round = 0; round < 4; round++) {
                p.beginTransaction();
                for (int i = 0; i < 50; i++) {
                    p.send(new ProducerRecord<>(topic, 0, b("k" + i), b("round" + round + "-" + "x".repeat(i))));
                }
                if (round % 2 == 0) {
                    p.commitTransaction();
                } else {
                    p.flush();
                    p.abortTransaction();
                }
            }
        }
        List<String> committed = values(readAll(topic, 1, "read_committed"));
        assertEquals(100, committed.size());
        assertTrue(committed.stream().allMatch(v -> v.startsWith("round0-") || v.startsWith("round2-")));
        assertEquals(200, values(readAll(topic, 1, "read_uncommitted")).size());
    }
}
