package strand.eco.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.Test;

/**
 * Offset commits from the current generation while another member's join has put the group
 * into PreparingRebalance. Kafka accepts both: a transactional commit (TxnOffsetCommit) in
 * any state — exactly-once v2 commits a task's offsets with its transaction whenever its
 * commit interval comes round, rebalancing or not — and a plain OffsetCommit outside
 * CompletingRebalance (consumers commit in onPartitionsRevoked, once a rebalance started).
 */
class CommitDuringRebalanceTest {
    static final String BOOTSTRAP = ExactlyOnceWordCountTest.BOOTSTRAP;

    /** Member A joined and stable; member B's JoinGroup then leaves the group PreparingRebalance (A does not poll). */
    interface Body {
        void run(Admin admin, KafkaConsumer<String, String> a, TopicPartition tp, String group, String run) throws Exception;
    }

    void withRebalancingGroup(Body body) throws Exception {
        String run = UUID.randomUUID().toString().substring(0, 8);
        String in = "rb-in-" + run;
        String group = "rb-group-" + run;
        TopicPartition tp = new TopicPartition(in, 0);
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", BOOTSTRAP))) {
            admin.createTopics(List.of(new NewTopic(in, 1, (short) 1), new NewTopic("rb-out-" + run, 1, (short) 1)))
                    .all().get();
            try (KafkaConsumer<String, String> a = TxnOffsetCommitFencingTest.joined(group, in);
                 KafkaConsumer<String, String> b = new KafkaConsumer<>(
                         TxnOffsetCommitFencingTest.consumerProps(group), new StringDeserializer(), new StringDeserializer())) {
                b.subscribe(List.of(in));
                long deadline = System.nanoTime() + 20_000_000_000L;
                GroupState state = null;
                while (System.nanoTime() < deadline) {
                    b.poll(Duration.ofMillis(100)); // sends JoinGroup; it waits for A to rejoin
                    state = admin.describeConsumerGroups(List.of(group)).all().get().get(group).groupState();
                    if (state == GroupState.PREPARING_REBALANCE) {
                        break;
                    }
                }
                assertEquals(GroupState.PREPARING_REBALANCE, state, "group state after B's join");
                body.run(admin, a, tp, group, run);
            }
        }
    }

    @Test
    void txnOffsetCommitIsAcceptedWhileTheGroupRebalances() throws Exception {
        withRebalancingGroup((admin, a, tp, group, run) -> {
            ConsumerGroupMetadata current = a.groupMetadata();
            try (KafkaProducer<String, String> producer = TxnOffsetCommitFencingTest.txProducer("rb-tx-" + run)) {
                producer.beginTransaction();
                producer.send(new ProducerRecord<>("rb-out-" + run, "k", "v"));
                producer.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(3)), current);
                producer.commitTransaction();
            }
            assertEquals(3, TxnOffsetCommitFencingTest.committed(admin, group, tp), "committed offset");
        });
    }

    @Test
    void offsetCommitFromTheCurrentGenerationIsAcceptedWhilePreparingRebalance() throws Exception {
        withRebalancingGroup((admin, a, tp, group, run) -> {
            a.commitSync(Map.of(tp, new OffsetAndMetadata(4)));
            assertEquals(4, TxnOffsetCommitFencingTest.committed(admin, group, tp), "committed offset");
        });
    }
}
