package strand.eco;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static strand.eco.Kit.*;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Producing with the Java client and reading back what was acknowledged. */
class ProducerTest {
    @RegisterExtension
    static final StrandBroker broker = new StrandBroker();

    static Admin admin;

    @BeforeAll
    static void setUp() {
        admin = admin(broker);
    }

    @AfterAll
    static void tearDown() {
        admin.close();
    }

    @Test
    void idempotentDefaultsAckContiguousOffsetsAndReadBackExactlyOnceInOrder() throws Exception {
        String topic = name("idem");
        int partitions = 4;
        int n = 2000;
        createTopic(admin, topic, partitions, null);

        Map<Integer, List<Long>> ackedOffsets = new HashMap<>();
        Map<Integer, List<String>> sentValues = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> p = producer(broker, ProducerConfig.LINGER_MS_CONFIG, 5)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            List<ProducerRecord<byte[], byte[]>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int part = i % partitions;
                byte[] value = ("v-" + i).getBytes(StandardCharsets.UTF_8);
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, part, ("k-" + i).getBytes(StandardCharsets.UTF_8), value);
                sent.add(r);
                futures.add(p.send(r));
            }
            p.flush();
            for (int i = 0; i < n; i++) {
                RecordMetadata md = futures.get(i).get(30, TimeUnit.SECONDS);
                assertEquals(sent.get(i).partition(), md.partition());
                ackedOffsets.computeIfAbsent(md.partition(), k -> new ArrayList<>()).add(md.offset());
                sentValues.computeIfAbsent(md.partition(), k -> new ArrayList<>())
                        .add(new String(sent.get(i).value(), StandardCharsets.UTF_8));
            }
        }
        for (int part = 0; part < partitions; part++) {
            List<Long> offs = ackedOffsets.get(part);
            assertEquals(n / partitions, offs.size());
            for (int i = 0; i < offs.size(); i++) {
                assertEquals((long) i, offs.get(i), "acked offsets of partition " + part + " are 0..n-1 in send order");
            }
        }

        // The default producer is idempotent: each partition knows one producer whose last
        // sequence is that of the partition's last record.
        var states = admin.describeProducers(partitions(topic, partitions)).all().get(30, TimeUnit.SECONDS);
        for (int part = 0; part < partitions; part++) {
            var active = states.get(new TopicPartition(topic, part)).activeProducers();
            assertEquals(1, active.size(), "one idempotent producer on partition " + part);
            assertTrue(active.get(0).producerId() >= 0);
            assertEquals(n / partitions - 1, active.get(0).lastSequence());
        }

        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            List<TopicPartition> tps = partitions(topic, partitions);
            c.assign(tps);
            c.seekToBeginning(tps);
            List<ConsumerRecord<byte[], byte[]>> got = drain(c, tps);
            assertEquals(n, got.size(), "every record read back exactly once");
            var byPart = byPartition(got);
            for (int part = 0; part < partitions; part++) {
                List<ConsumerRecord<byte[], byte[]>> rs = byPart.get(new TopicPartition(topic, part));
                List<String> values = new ArrayList<>();
                for (int i = 0; i < rs.size(); i++) {
                    assertEquals((long) i, rs.get(i).offset());
                    values.add(new String(rs.get(i).value(), StandardCharsets.UTF_8));
                }
                assertEquals(sentValues.get(part), values, "partition " + part + " in send order");
            }
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            for (TopicPartition tp : tps) {
                assertEquals((long) n / partitions, end.get(tp));
            }
        }
    }

    @Test
    void headersNullKeyAndValueRoundTrip() throws Exception {
        String topic = name("hdr");
        createTopic(admin, topic, 1, null);
        byte[] bin = new byte[256];
        for (int i = 0; i < bin.length; i++) {
            bin[i] = (byte) i;
        }
        List<Header> headers = List.of(
                new RecordHeader("trace", "abc".getBytes(StandardCharsets.UTF_8)),
                new RecordHeader("bin", bin),
                new RecordHeader("dup", new byte[] {1}),
                new RecordHeader("dup", new byte[] {2}),
                new RecordHeader("empty", new byte[0]),
                new RecordHeader("nullvalue", (byte[]) null),
                new RecordHeader("ünïcode-ключ", new byte[] {(byte) 0xff, 0, (byte) 0x80}));
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            p.send(new ProducerRecord<>(topic, 0, "k".getBytes(StandardCharsets.UTF_8), "v".getBytes(StandardCharsets.UTF_8), headers)).get(30, TimeUnit.SECONDS);
            p.send(new ProducerRecord<>(topic, 0, null, "no-key".getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS);
            p.send(new ProducerRecord<>(topic, 0, "tombstone".getBytes(StandardCharsets.UTF_8), null)).get(30, TimeUnit.SECONDS);
            p.send(new ProducerRecord<>(topic, 0, null, null)).get(30, TimeUnit.SECONDS);
            p.send(new ProducerRecord<>(topic, 0, new byte[0], new byte[0])).get(30, TimeUnit.SECONDS);
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, 5);
            assertEquals(5, rs.size());

            Header[] got = rs.get(0).headers().toArray();
            assertEquals(headers.size(), got.length, "every header, duplicates included");
            for (int i = 0; i < headers.size(); i++) {
                assertEquals(headers.get(i).key(), got[i].key(), "header " + i + " key in order");
                assertArrayEquals(headers.get(i).value(), got[i].value(), "header " + i + " value");
            }
            List<byte[]> dups = new ArrayList<>();
            rs.get(0).headers().headers("dup").forEach(h -> dups.add(h.value()));
            assertEquals(2, dups.size());
            assertArrayEquals(new byte[] {2}, rs.get(0).headers().lastHeader("dup").value());
            assertNull(rs.get(0).headers().lastHeader("nullvalue").value());

            assertNull(rs.get(1).key());
            assertArrayEquals("no-key".getBytes(StandardCharsets.UTF_8), rs.get(1).value());
            assertEquals(0, rs.get(1).headers().toArray().length);
            assertArrayEquals("tombstone".getBytes(StandardCharsets.UTF_8), rs.get(2).key());
            assertNull(rs.get(2).value());
            assertNull(rs.get(3).key());
            assertNull(rs.get(3).value());
            assertArrayEquals(new byte[0], rs.get(4).key());
            assertArrayEquals(new byte[0], rs.get(4).value());
        }
    }

    @Test
    void largeRecordNearMaxMessageBytesAndTooLargeRejected() throws Exception {
        String topic = name("large");
        int max = 300_000;
        createTopic(admin, topic, 1, Map.of("max.message.bytes", Integer.toString(max)));
        Random rnd = new Random(42);
        // A batch of one record adds 61 bytes of batch header and ~20 bytes of record framing.
        byte[] big = new byte[max - 200];
        rnd.nextBytes(big);
        byte[] tooBig = new byte[max + 1000];
        rnd.nextBytes(tooBig);
        try (KafkaProducer<byte[], byte[]> p = producer(broker,
                ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 2_000_000,
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "none")) {
            RecordMetadata md = p.send(new ProducerRecord<>(topic, 0, null, big)).get(30, TimeUnit.SECONDS);
            assertEquals(0L, md.offset());
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> p.send(new ProducerRecord<>(topic, 0, null, tooBig)).get(30, TimeUnit.SECONDS));
            assertInstanceOf(RecordTooLargeException.class, e.getCause(), "MESSAGE_TOO_LARGE from the broker");
            // The partition still takes records after the refusal.
            RecordMetadata after = p.send(new ProducerRecord<>(topic, 0, null, "after".getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS);
            assertEquals(1L, after.offset());
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, 2);
            assertEquals(2, rs.size());
            assertArrayEquals(big, rs.get(0).value());
            assertArrayEquals("after".getBytes(StandardCharsets.UTF_8), rs.get(1).value());
        }
    }

    @ParameterizedTest(name = "compression.type={0}")
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void everyCompressionTypeRoundTripsByteIdentical(String compression) throws Exception {
        String topic = name("comp-" + compression);
        int partitions = 2;
        int n = 600;
        createTopic(admin, topic, partitions, null);
        Random rnd = new Random(compression.hashCode());
        List<byte[]> values = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            byte[] v;
            if (i % 3 == 0) {
                v = new byte[rnd.nextInt(2000)]; // incompressible
                rnd.nextBytes(v);
            } else {
                v = ("record " + i + " ").repeat(1 + i % 40).getBytes(StandardCharsets.UTF_8); // compressible
            }
            values.add(v);
        }
        try (KafkaProducer<byte[], byte[]> p = producer(broker,
                ProducerConfig.COMPRESSION_TYPE_CONFIG, compression,
                ProducerConfig.LINGER_MS_CONFIG, 20,
                ProducerConfig.BATCH_SIZE_CONFIG, 64 * 1024)) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                fs.add(p.send(new ProducerRecord<>(topic, i % partitions,
                        Integer.toString(i).getBytes(StandardCharsets.UTF_8), values.get(i),
                        List.of(new RecordHeader("i", Integer.toString(i).getBytes(StandardCharsets.UTF_8))))));
            }
            for (Future<RecordMetadata> f : fs) {
                f.get(30, TimeUnit.SECONDS);
            }
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            List<TopicPartition> tps = partitions(topic, partitions);
            c.assign(tps);
            List<ConsumerRecord<byte[], byte[]>> rs = drain(c, tps);
            assertEquals(n, rs.size());
            boolean[] seen = new boolean[n];
            for (ConsumerRecord<byte[], byte[]> r : rs) {
                int i = Integer.parseInt(new String(r.key(), StandardCharsets.UTF_8));
                assertTrue(!seen[i], "record " + i + " once");
                seen[i] = true;
                assertEquals(i % partitions, r.partition());
                assertEquals((long) i / partitions, r.offset());
                assertArrayEquals(values.get(i), r.value(), "record " + i + " byte-identical");
                assertArrayEquals(Integer.toString(i).getBytes(StandardCharsets.UTF_8), r.headers().lastHeader("i").value());
            }
        }
    }

    @Test
    void logAppendTimeTopicStampsBrokerTime() throws Exception {
        String topic = name("lat");
        createTopic(admin, topic, 1, Map.of("message.timestamp.type", "LogAppendTime"));
        long before = System.currentTimeMillis();
        RecordMetadata md;
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            // The producer's timestamp (long ago) is replaced by the broker's clock.
            md = p.send(new ProducerRecord<>(topic, 0, 1_000L, null, "x".getBytes(StandardCharsets.UTF_8)))
                    .get(30, TimeUnit.SECONDS);
        }
        long after = System.currentTimeMillis();
        assertTrue(md.timestamp() >= before - 1000 && md.timestamp() <= after + 1000,
                "acknowledged with the log append time, got " + md.timestamp());
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            ConsumerRecord<byte[], byte[]> r = pollN(c, 1).get(0);
            assertEquals(org.apache.kafka.common.record.TimestampType.LOG_APPEND_TIME, r.timestampType());
            assertEquals(md.timestamp(), r.timestamp());
        }
    }

    @Test
    void compactedTopicRefusesRecordsWithoutKey() throws Exception {
        String topic = name("compact");
        createTopic(admin, topic, 1, Map.of("cleanup.policy", "compact"));
        try (KafkaProducer<byte[], byte[]> p = producer(broker)) {
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> p.send(new ProducerRecord<>(topic, 0, null, "no key".getBytes(StandardCharsets.UTF_8)))
                            .get(30, TimeUnit.SECONDS));
            assertInstanceOf(org.apache.kafka.common.InvalidRecordException.class, e.getCause(), "INVALID_RECORD");
            assertEquals(0L, p.send(new ProducerRecord<>(topic, 0, "k".getBytes(StandardCharsets.UTF_8),
                    "keyed".getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS).offset());
        }
    }

    @ParameterizedTest(name = "acks={0}")
    @ValueSource(strings = {"0", "1"})
    void nonIdempotentProducersWithAcks0And1(String acks) throws Exception {
        String topic = name("acks" + acks);
        createTopic(admin, topic, 1, null);
        int n = 200;
        try (KafkaProducer<byte[], byte[]> p = producer(broker,
                ProducerConfig.ACKS_CONFIG, acks,
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false")) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                fs.add(p.send(new ProducerRecord<>(topic, 0, null, Integer.toString(i).getBytes(StandardCharsets.UTF_8))));
            }
            p.flush();
            for (int i = 0; i < n; i++) {
                long off = fs.get(i).get(30, TimeUnit.SECONDS).offset();
                // acks=0 gets no answer, so the client cannot know the offset.
                assertEquals(acks.equals("0") ? -1L : (long) i, off);
            }
            assertEquals(1, p.partitionsFor(topic).size());
            assertTrue(p.partitionsFor(topic).get(0).leader().id() >= 0);
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, n);
            for (int i = 0; i < n; i++) {
                assertEquals(Integer.toString(i), new String(rs.get(i).value(), StandardCharsets.UTF_8));
            }
        }
    }

    @Test
    void smallFetchSizesStillReturnLargeRecords() throws Exception {
        // KIP-74: the first batch is returned whole even when it exceeds max.partition.fetch.bytes
        // and fetch.max.bytes, so a consumer with small limits still makes progress.
        String topic = name("kip74");
        createTopic(admin, topic, 1, null);
        byte[] big = new byte[200_000];
        new Random(7).nextBytes(big);
        try (KafkaProducer<byte[], byte[]> p = producer(broker, ProducerConfig.COMPRESSION_TYPE_CONFIG, "none")) {
            for (int i = 0; i < 3; i++) {
                p.send(new ProducerRecord<>(topic, 0, null, big));
            }
            p.flush();
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(broker,
                org.apache.kafka.clients.consumer.ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 10_000,
                org.apache.kafka.clients.consumer.ConsumerConfig.FETCH_MAX_BYTES_CONFIG, 10_000)) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            List<ConsumerRecord<byte[], byte[]>> rs = pollN(c, 3);
            for (int i = 0; i < 3; i++) {
                assertEquals((long) i, rs.get(i).offset());
                assertArrayEquals(big, rs.get(i).value());
            }
        }
    }
}
