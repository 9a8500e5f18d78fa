package strand.eco.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.Future;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Kafka Streams exactly-once v2 against Strand: a word count with a repartition topic and a
 * changelogged store, its process killed with -9 twice mid-stream (the second restart with
 * a wiped state directory, so the store is rebuilt from the changelog), must end with the
 * exact per-word counts of the input in its read_committed output.
 */
class ExactlyOnceWordCountTest {
    static final String BOOTSTRAP = System.getProperty("strand.bootstrap", "127.0.0.1:22500");
    static final int LINES = 20_000;
    static final int PARTITIONS = 3;
    static final long SEED = 20_261_129L;
    static final long LINE_DELAY_MICROS = Long.getLong("eco.line.delay.micros", 400);

    Path work;
    Admin admin;
    /** Application processes that must stay alive until the test kills or stops them. */
    final List<Process> live = new ArrayList<>();
    final List<Process> all = new ArrayList<>();
    final List<Path> appLogs = new ArrayList<>();

    @BeforeEach
    void setUp() throws IOException {
        String base = System.getProperty("eco.workdir");
        Path root = base == null || base.isEmpty() || base.startsWith("${")
                ? Files.createTempDirectory("eco-streams")
                : Files.createDirectories(Path.of(base));
        work = Files.createTempDirectory(root, "wordcount");
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        admin = Admin.create(p);
    }

    @AfterEach
    void tearDown() {
        for (Process p : all) {
            p.destroyForcibly();
        }
        if (admin != null) {
            admin.close(Duration.ofSeconds(5));
        }
    }

    /** The input: LINES lines of 1..12 words drawn (skewed) from 300 words, from a fixed seed. */
    static List<String> inputLines() {
        Random rnd = new Random(SEED);
        List<String> lines = new ArrayList<>(LINES);
        for (int i = 0; i < LINES; i++) {
            int n = 1 + rnd.nextInt(12);
            StringBuilder line = new StringBuilder();
            for (int w = 0; w < n; w++) {
                double u = rnd.nextDouble();
                int word = (int) (300 * u * u); // small indexes much more frequent
                if (w > 0) {
                    line.append(' ');
                }
                line.append(String.format("w%03d", word));
            }
            lines.add(line.toString());
        }
        return lines;
    }

    /** Topics created and the input produced for one run; expected counts computed. */
    record Run(String input, String output, String appId, Map<String, Long> expected, long totalWords) {
        String repartition() {
            return appId + "-" + WordCountApp.REPARTITION_NAME + "-repartition";
        }

        String changelog() {
            return appId + "-" + WordCountApp.STORE_NAME + "-changelog";
        }
    }

    Run prepare(String prefix) throws Exception {
        String run = UUID.randomUUID().toString().substring(0, 8);
        Run r = new Run(prefix + "-in-" + run, prefix + "-out-" + run, prefix + "-app-" + run, new TreeMap<>(), 0);
        admin.createTopics(List.of(new NewTopic(r.input(), PARTITIONS, (short) 1),
                new NewTopic(r.output(), PARTITIONS, (short) 1))).all().get();
        List<String> lines = inputLines();
        long totalWords = 0;
        for (String line : lines) {
            for (String w : line.split(" ")) {
                r.expected().merge(w, 1L, Long::sum);
                totalWords++;
            }
        }
        produce(r.input(), lines);
        assertEquals(LINES, endOffsetsSum(r.input()), "input end offsets after the idempotent producer");
        return new Run(r.input(), r.output(), r.appId(), r.expected(), totalWords);
    }

    @Test
    void wordCountIsExactAfterKill9AndChangelogRestore() throws Exception {
        Run r = prepare("wc");
        String input = r.input();
        String output = r.output();
        String appId = r.appId();
        Path stateDir = work.resolve("state");
        Path props = writeAppProps(appId, input, output, stateDir, "app");

        // Run 1: killed with -9 once a quarter of the input is committed and output exists.
        Process run1 = launch(props, "run1");
        waitFor("run 1 to commit 25% of the input", 90, () -> {
            long c = committedInput(appId, input);
            long o = endOffsetsSum(output);
            System.out.println("progress: committed input " + c + ", output end " + o);
            return c >= LINES / 4 && o > 0;
        });
        kill9(run1, "run 1");
        long afterRun1 = committedInput(appId, input);
        System.out.println("input lines committed after run 1: " + afterRun1);
        assertTrue(afterRun1 < LINES * 3 / 4, "run 1 was killed well before the end of the input: " + afterRun1);

        // Run 2: same state dir (EOS discards a state store left by a crash), killed half-way
        // through the rest.
        Process run2 = launch(props, "run2");
        long target2 = afterRun1 + (LINES - afterRun1) / 2;
        waitFor("run 2 to commit " + target2 + " input lines", 120, () -> committedInput(appId, input) >= target2);
        kill9(run2, "run 2");
        long afterRun2 = committedInput(appId, input);
        System.out.println("input lines committed after run 2: " + afterRun2);
        assertTrue(afterRun2 > afterRun1, "run 2 made progress: " + afterRun1 + " -> " + afterRun2);
        assertTrue(afterRun2 < LINES, "run 2 was killed before the end of the input: " + afterRun2);

        // Run 3: wiped state dir, so the store is restored from the changelog; runs to the end.
        deleteTree(stateDir);
        Process run3 = launch(props, "run3");
        Path log3 = appLogs.get(appLogs.size() - 1);
        waitFor("run 3 to consume all input and repartition records", 180, () ->
                lag(appId, input) == 0 && lag(appId, r.repartition()) == 0);
        assertEquals(0, stopGracefully(run3, "run 3"), "run 3's exit code after SIGTERM (2: KafkaStreams ended in ERROR)");

        String log = Files.readString(log3);
        long restored = log.lines().filter(l -> l.startsWith("RESTORE_END " + WordCountApp.STORE_NAME))
                .mapToLong(l -> Long.parseLong(l.substring(l.lastIndexOf(' ') + 1))).sum();
        assertTrue(restored > 0, "run 3 (wiped state dir) restored records from the changelog; got " + restored);

        checkOutput(r);
        checkInternalTopics(r);
    }

    /**
     * Two instances of the application share the tasks; one is killed with -9 mid-stream and
     * the other takes its tasks over (after the session timeout), fencing the dead one's
     * transactions, and finishes alone: the counts must still be exact.
     */
    @Test
    void wordCountIsExactWhenOneOfTwoInstancesIsKilled() throws Exception {
        Run r = prepare("wc2");
        Path propsA = writeAppProps(r.appId(), r.input(), r.output(), work.resolve("state-a"), "a");
        Path propsB = writeAppProps(r.appId(), r.input(), r.output(), work.resolve("state-b"), "b");
        Process a = launch(propsA, "instance-a");
        Process b = launch(propsB, "instance-b");
        waitFor("both instances to run tasks and commit 30% of the input", 120, () ->
                committedInput(r.appId(), r.input()) >= LINES * 3 / 10 && logHas(appLogs.get(0), "STATE REBALANCING -> RUNNING")
                        && logHas(appLogs.get(1), "STATE REBALANCING -> RUNNING"));
        long members = groupMembers(r.appId());
        assertEquals(2, members, "members of the application's group");
        kill9(a, "instance a");
        long atKill = committedInput(r.appId(), r.input());
        System.out.println("input lines committed when instance a was killed: " + atKill);
        assertTrue(atKill < LINES * 3 / 4, "instance a was killed well before the end of the input: " + atKill);
        waitFor("instance b to consume all input and repartition records", 180, () ->
                lag(r.appId(), r.input()) == 0 && lag(r.appId(), r.repartition()) == 0);
        assertEquals(0, stopGracefully(b, "instance b"), "instance b's exit code after SIGTERM");
        checkOutput(r);
    }

    boolean logHas(Path log, String text) {
        try {
            return Files.readString(log).contains(text);
        } catch (IOException e) {
            return false;
        }
    }

    long groupMembers(String group) throws Exception {
        return admin.describeConsumerGroups(List.of(group)).all().get().get(group).members().size();
    }

    /**
     * The output, read_committed: the last count of each word is its count in the input, and
     * each word's counts only ever go up (a replay after a crash would repeat or skip).
     */
    void checkOutput(Run r) {
        Map<String, Long> expected = r.expected();
        Map<String, List<Long>> seen = readCommitted(r.output());
        Map<String, Long> last = new TreeMap<>();
        List<String> nonMonotonic = new ArrayList<>();
        seen.forEach((word, counts) -> {
            last.put(word, counts.get(counts.size() - 1));
            for (int i = 1; i < counts.size(); i++) {
                if (counts.get(i) <= counts.get(i - 1)) {
                    nonMonotonic.add(word + ":" + counts.subList(Math.max(0, i - 2), Math.min(counts.size(), i + 2)));
                    break;
                }
            }
        });
        Map<String, String> diff = new TreeMap<>();
        for (String w : expected.keySet()) {
            if (!expected.get(w).equals(last.get(w))) {
                diff.put(w, "expected " + expected.get(w) + " got " + last.get(w));
            }
        }
        for (String w : last.keySet()) {
            if (!expected.containsKey(w)) {
                diff.put(w, "unexpected word with count " + last.get(w));
            }
        }
        assertEquals(Map.of(), diff, "final counts differ (" + r.totalWords() + " words in the input)");
        assertEquals(List.of(), nonMonotonic, "committed counts that did not increase");
        assertEquals(r.totalWords(), last.values().stream().mapToLong(Long::longValue).sum());
    }

    /**
     * The internal topics Streams created: the repartition topic (delete) and the store's
     * changelog (compact), both with the input's partition count.
     */
    void checkInternalTopics(Run r) throws Exception {
        String repartition = r.repartition();
        String changelog = r.changelog();
        Map<String, TopicDescription> described = admin.describeTopics(List.of(repartition, changelog))
                .allTopicNames().get();
        assertEquals(PARTITIONS, described.get(repartition).partitions().size());
        assertEquals(PARTITIONS, described.get(changelog).partitions().size());
        ConfigResource cl = new ConfigResource(ConfigResource.Type.TOPIC, changelog);
        ConfigResource rp = new ConfigResource(ConfigResource.Type.TOPIC, repartition);
        Map<ConfigResource, Config> configs = admin.describeConfigs(List.of(cl, rp)).all().get();
        assertEquals("compact", configs.get(cl).get("cleanup.policy").value(), "changelog cleanup.policy");
        assertEquals("delete", configs.get(rp).get("cleanup.policy").value(), "repartition cleanup.policy");
        // The changelog holds (at least) the latest count of every word.
        assertTrue(endOffsetsSum(changelog) >= r.expected().size(), "changelog records");
    }

    // ---- the application process ----

    Path writeAppProps(String appId, String input, String output, Path stateDir, String name) throws IOException {
        Properties p = new Properties();
        p.put("application.id", appId);
        p.put("bootstrap.servers", BOOTSTRAP);
        p.put("processing.guarantee", "exactly_once_v2");
        p.put("replication.factor", "1");
        p.put("state.dir", stateDir.toString());
        p.put("num.stream.threads", "1");
        p.put("commit.interval.ms", "200");
        // A killed member must leave the group quickly for the restarted one to get its tasks.
        p.put("consumer.session.timeout.ms", "6000");
        p.put("consumer.heartbeat.interval.ms", "1500");
        // Small fetches and polls, so the input arrives in slices and the thread goes back to
        // poll (and so reads the repartition topic) between them, instead of buffering all
        // of it at once; a crash then lands with both sub-topologies part-way.
        p.put("main.consumer.max.partition.fetch.bytes", "16384");
        p.put("main.consumer.max.poll.records", "200");
        p.put("input.topic", input);
        p.put("output.topic", output);
        p.put("line.delay.micros", Long.toString(LINE_DELAY_MICROS));
        Path file = work.resolve(name + ".properties");
        try (FileOutputStream out = new FileOutputStream(file.toFile())) {
            p.store(out, "word count");
        }
        return file;
    }

    Process launch(Path props, String label) throws IOException {
        Path log = work.resolve(label + ".log");
        appLogs.add(log);
        String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(javaBin, "-Xmx256m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Deco.kafka.log.level=" + System.getProperty("eco.app.log.level", "INFO"),
                "-Deco.debug.logger=" + System.getProperty("eco.debug.logger", "strand.eco.none"),
                "-cp", System.getProperty("java.class.path"),
                WordCountApp.class.getName(), props.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        // The runner kills whatever is listed here if this JVM dies before cleaning up.
        Files.writeString(work.resolve("pids"), p.pid() + "\n",
                java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
        live.add(p);
        all.add(p);
        System.out.println("started " + label + " (pid " + p.pid() + "), log " + log);
        return p;
    }

    void kill9(Process p, String what) throws InterruptedException {
        assertTrue(p.isAlive(), what + " died by itself before the kill:\n" + tails());
        live.remove(p);
        p.destroyForcibly(); // SIGKILL
        p.waitFor();
        System.out.println("killed " + what + " with -9");
    }

    int stopGracefully(Process p, String what) throws InterruptedException {
        assertTrue(p.isAlive(), what + " died by itself:\n" + tails());
        live.remove(p);
        p.destroy(); // SIGTERM: the application closes KafkaStreams and exits
        if (!p.waitFor(60, java.util.concurrent.TimeUnit.SECONDS)) {
            p.destroyForcibly();
            fail(what + " did not stop within 60 s of SIGTERM:\n" + tails());
        }
        return p.exitValue();
    }

    void waitFor(String what, int seconds, BooleanSupplier cond) throws InterruptedException {
        long start = System.nanoTime();
        long deadline = start + seconds * 1_000_000_000L;
        while (true) {
            if (cond.getAsBoolean()) {
                System.out.printf("%s: done after %.1f s%n", what, (System.nanoTime() - start) / 1e9);
                return;
            }
            for (Process p : live) {
                if (!p.isAlive()) {
                    fail("an application process exited (" + p.exitValue() + ") while waiting for " + what + ":\n" + tails());
                }
            }
            if (System.nanoTime() > deadline) {
                fail("timed out after " + seconds + " s waiting for " + what + ":\n" + tails());
            }
            Thread.sleep(250);
        }
    }

    String tails() {
        StringBuilder sb = new StringBuilder();
        for (Path log : appLogs) {
            try {
                List<String> all = Files.readAllLines(log);
                sb.append("--- ").append(log).append(" (last 60 lines of ").append(all.size()).append(")\n");
                all.subList(Math.max(0, all.size() - 60), all.size()).forEach(l -> sb.append(l).append('\n'));
            } catch (IOException e) {
                sb.append("--- ").append(log).append(": ").append(e).append('\n');
            }
        }
        return sb.toString();
    }

    // ---- Kafka helpers ----

    void produce(String topic, List<String> lines) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            List<Future<RecordMetadata>> acks = new ArrayList<>(lines.size());
            for (int i = 0; i < lines.size(); i++) {
                acks.add(producer.send(new ProducerRecord<>(topic, "line-" + i, lines.get(i))));
            }
            producer.flush();
            for (Future<RecordMetadata> f : acks) {
                f.get();
            }
        }
    }

    Map<TopicPartition, Long> endOffsets(String topic, OffsetSpec spec) {
        try {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            Map<TopicPartition, OffsetSpec> req = new HashMap<>();
            d.partitions().forEach(p -> req.put(new TopicPartition(topic, p.partition()), spec));
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> res = admin.listOffsets(req).all().get();
            return res.entrySet().stream().collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    static String safe(java.util.concurrent.Callable<Object> c) {
        try {
            return String.valueOf(c.call());
        } catch (Exception e) {
            return e.toString();
        }
    }

    Map<TopicPartition, Long> lso(String topic) throws Exception {
        Map<TopicPartition, OffsetSpec> req = new HashMap<>();
        for (int i = 0; i < PARTITIONS; i++) {
            req.put(new TopicPartition(topic, i), OffsetSpec.latest());
        }
        return admin.listOffsets(req, new org.apache.kafka.clients.admin.ListOffsetsOptions(IsolationLevel.READ_COMMITTED)).all().get()
                .entrySet().stream().collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
    }

    long endOffsetsSum(String topic) {
        return endOffsets(topic, OffsetSpec.latest()).values().stream().mapToLong(Long::longValue).sum();
    }

    Map<TopicPartition, Long> committed(String group, String topic) {
        try {
            Map<TopicPartition, OffsetAndMetadata> all = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get();
            Map<TopicPartition, Long> out = new HashMap<>();
            all.forEach((tp, om) -> {
                if (tp.topic().equals(topic) && om != null) {
                    out.put(tp, om.offset());
                }
            });
            return out;
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    long committedInput(String group, String topic) {
        return committed(group, topic).values().stream().mapToLong(Long::longValue).sum();
    }

    /** End offset minus committed offset, summed over the topic's partitions (a missing commit counts as 0). */
    long lag(String group, String topic) {
        Map<TopicPartition, Long> end = endOffsets(topic, OffsetSpec.latest());
        Map<TopicPartition, Long> done = committed(group, topic);
        long lag = 0;
        for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
            lag += e.getValue() - done.getOrDefault(e.getKey(), 0L);
        }
        return lag;
    }

    /** Every committed record of the topic, per key in offset order. */
    Map<String, List<Long>> readCommitted(String topic) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, IsolationLevel.READ_COMMITTED.toString().toLowerCase());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        try (KafkaConsumer<String, Long> consumer =
                     new KafkaConsumer<>(p, new StringDeserializer(), new LongDeserializer())) {
            List<TopicPartition> tps = consumer.partitionsFor(topic).stream()
                    .map(pi -> new TopicPartition(topic, pi.partition())).sorted(Comparator.comparingInt(TopicPartition::partition))
                    .toList();
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps); // the last stable offsets
            Map<String, List<Long>> out = new HashMap<>();
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))) {
                if (System.nanoTime() > deadline) {
                    fail("reading " + topic + " to " + end + " timed out");
                }
                for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(500))) {
                    out.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value());
                }
            }
            return out;
        }
    }

    static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        }
    }
}
