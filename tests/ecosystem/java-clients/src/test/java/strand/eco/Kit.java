package strand.eco;

import static org.junit.jupiter.api.Assertions.fail;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** Client configurations and polling helpers shared by the tests. */
final class Kit {
    static final Duration TIMEOUT = Duration.ofSeconds(30);

    private Kit() {
    }

    static String name(String prefix) {
        return prefix + "-" + UUID.randomUUID().toString().substring(0, 10);
    }

    static Properties base(StrandBroker broker) {
        Properties p = new Properties();
        p.put("bootstrap.servers", broker.bootstrap());
        p.put("client.id", "eco-java");
        return p;
    }

    static Admin admin(StrandBroker broker) {
        Properties p = base(broker);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        return Admin.create(p);
    }

    /** A producer with the client's defaults (idempotent, acks=all) plus the given overrides. */
    static KafkaProducer<byte[], byte[]> producer(StrandBroker broker, Object... overrides) {
        Properties p = base(broker);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30000);
        putAll(p, overrides);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(StrandBroker broker, Object... overrides) {
        Properties p = base(broker);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        putAll(p, overrides);
        return new KafkaConsumer<>(p);
    }

    private static void putAll(Properties p, Object... kv) {
        if (kv.length % 2 != 0) {
            throw new IllegalArgumentException("key/value pairs expected");
        }
        for (int i = 0; i < kv.length; i += 2) {
            p.put(kv[i], kv[i + 1]);
        }
    }

    static void createTopic(Admin admin, String topic, int partitions, Map<String, String> configs)
            throws Exception {
        NewTopic t = new NewTopic(topic, partitions, (short) 1);
        if (configs != null) {
            t.configs(configs);
        }
        admin.createTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
        // Wait for the topic's metadata to show every partition with a leader.
        await("topic " + topic + " visible", () -> {
            try {
                var d = admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS);
                return d.get(topic).partitions().size() == partitions
                        && d.get(topic).partitions().stream().allMatch(pi -> pi.leader() != null);
            } catch (Exception e) {
                return false;
            }
        });
    }

    static void await(String what, BooleanSupplier cond) {
        await(what, TIMEOUT, cond);
    }

    static void await(String what, Duration timeout, BooleanSupplier cond) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (System.nanoTime() < deadline) {
            if (cond.getAsBoolean()) {
                return;
            }
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError(e);
            }
        }
        fail("timed out after " + timeout + " waiting for: " + what);
    }

    /** Polls until {@code count} records arrived (fails at the deadline); returns them. */
    static List<ConsumerRecord<byte[], byte[]>> pollN(KafkaConsumer<byte[], byte[]> c, int count) {
        return pollN(c, count, TIMEOUT);
    }

    static List<ConsumerRecord<byte[], byte[]>> pollN(KafkaConsumer<byte[], byte[]> c, int count, Duration timeout) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        long deadline = System.nanoTime() + timeout.toNanos();
        while (out.size() < count && System.nanoTime() < deadline) {
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                out.add(r);
            }
        }
        if (out.size() < count) {
            fail("got " + out.size() + " of " + count + " records within " + timeout);
        }
        return out;
    }

    /**
     * Polls until every assigned partition's position reached its end offset and returns all
     * records read (for "nothing more than expected" checks).
     */
    static List<ConsumerRecord<byte[], byte[]>> drain(KafkaConsumer<byte[], byte[]> c, Collection<TopicPartition> tps) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        Map<TopicPartition, Long> end = c.endOffsets(tps, TIMEOUT);
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        while (System.nanoTime() < deadline) {
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                out.add(r);
            }
            boolean done = true;
            for (TopicPartition tp : tps) {
                if (c.position(tp, TIMEOUT) < end.get(tp)) {
                    done = false;
                }
            }
            if (done) {
                return out;
            }
        }
        fail("did not reach the end offsets " + end + " within " + TIMEOUT);
        return out;
    }

    static Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> byPartition(List<ConsumerRecord<byte[], byte[]>> rs) {
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> m = new HashMap<>();
        for (ConsumerRecord<byte[], byte[]> r : rs) {
            m.computeIfAbsent(new TopicPartition(r.topic(), r.partition()), k -> new ArrayList<>()).add(r);
        }
        return m;
    }

    static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> l = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            l.add(new TopicPartition(topic, i));
        }
        return l;
    }
}
