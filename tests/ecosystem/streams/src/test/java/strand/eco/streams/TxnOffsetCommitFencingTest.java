package strand.eco.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.UUID;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;

/**
 * The fencing exactly-once v2 relies on (KIP-447): a transactional producer commits the
 * consumer's offsets with the consumer's group metadata (member id, generation), and the
 * group coordinator refuses a stale member or generation — the zombie of a task that was
 * moved elsewhere — so its transaction can only abort.
 */
class TxnOffsetCommitFencingTest {
    static final String BOOTSTRAP = ExactlyOnceWordCountTest.BOOTSTRAP;

    static Properties consumerProps(String group) {
        Properties p = new Properties();
        p.put("bootstrap.servers", BOOTSTRAP);
        p.put("group.id", group);
        p.put("enable.auto.commit", "false");
        p.put("isolation.level", "read_committed");
        p.put("session.timeout.ms", "6000");
        p.put("heartbeat.interval.ms", "1000");
        return p;
    }

    static KafkaConsumer<String, String> joined(String group, String topic) {
        KafkaConsumer<String, String> c =
                new KafkaConsumer<>(consumerProps(group), new StringDeserializer(), new StringDeserializer());
        c.subscribe(List.of(topic));
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (c.assignment().isEmpty()) {
            assertTrue(System.nanoTime() < deadline, "consumer got no assignment in 30 s");
            c.poll(Duration.ofMillis(200));
        }
        return c;
    }

    static KafkaProducer<String, String> txProducer(String id) {
        Properties p = new Properties();
        p.put("bootstrap.servers", BOOTSTRAP);
        p.put("transactional.id", id);
        p.put("transaction.timeout.ms", "10000");
        KafkaProducer<String, String> producer =
                new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
        producer.initTransactions();
        return producer;
    }

    static long committed(Admin admin, String group, TopicPartition tp) throws Exception {
        OffsetAndMetadata om = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().get(tp);
        return om == null ? -1 : om.offset();
    }

    @Test
    void staleMemberOrGenerationCannotCommitOffsetsInATransaction() throws Exception {
        String run = UUID.randomUUID().toString().substring(0, 8);
        String in = "fence-in-" + run;
        String out = "fence-out-" + run;
        String group = "fence-group-" + run;
        TopicPartition tp = new TopicPartition(in, 0);
        Properties ap = new Properties();
        ap.put("bootstrap.servers", BOOTSTRAP);
        try (Admin admin = Admin.create(ap)) {
            admin.createTopics(List.of(new NewTopic(in, 1, (short) 1), new NewTopic(out, 1, (short) 1))).all().get();

            // Member A joins, then leaves; member B joins: a later generation without A.
            ConsumerGroupMetadata stale;
            try (KafkaConsumer<String, String> a = joined(group, in)) {
                stale = a.groupMetadata();
            }
            try (KafkaConsumer<String, String> b = joined(group, in);
                 KafkaProducer<String, String> producer = txProducer("fence-tx-" + run)) {
                ConsumerGroupMetadata current = b.groupMetadata();
                assertNotEquals(stale.memberId(), current.memberId());
                assertTrue(current.generationId() > stale.generationId(),
                        "generations: stale " + stale.generationId() + ", current " + current.generationId());

                // A's (gone) member id: refused, the transaction aborts, nothing committed.
                producer.beginTransaction();
                producer.send(new ProducerRecord<>(out, "k", "from the zombie"));
                KafkaException e1 = assertThrows(KafkaException.class,
                        () -> producer.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(5)), stale));
                assertInstanceOf(CommitFailedException.class, e1, "error for an unknown member: " + e1);
                producer.abortTransaction();
                assertEquals(-1, committed(admin, group, tp), "offset committed by a stale member");

                // B's member id with an older generation: refused too (ILLEGAL_GENERATION).
                ConsumerGroupMetadata oldGeneration = new ConsumerGroupMetadata(group,
                        current.generationId() - 1, current.memberId(), Optional.empty());
                producer.beginTransaction();
                producer.send(new ProducerRecord<>(out, "k", "from an old generation"));
                KafkaException e2 = assertThrows(KafkaException.class,
                        () -> producer.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(6)), oldGeneration));
                assertInstanceOf(CommitFailedException.class, e2, "error for an old generation: " + e2);
                producer.abortTransaction();
                assertEquals(-1, committed(admin, group, tp), "offset committed with an old generation");

                // The current member and generation: committed with the transaction.
                producer.beginTransaction();
                producer.send(new ProducerRecord<>(out, "k", "from the live member"));
                producer.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(7)), current);
                producer.commitTransaction();
                assertEquals(7, committed(admin, group, tp), "offset committed by the current member");
            }
        }
    }
}
