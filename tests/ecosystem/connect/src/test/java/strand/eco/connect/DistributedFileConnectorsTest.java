package strand.eco.connect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.FileOutputStream;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * A Kafka Connect distributed worker (ConnectDistributed, its own JVM) against Strand: its
 * config/offset/status topics, a FileStreamSource connector copying a file into a topic and
 * a FileStreamSink connector copying the topic into another file, created over REST. The
 * worker is then stopped (SIGTERM) and started again: the connectors come back from the
 * config topic, the source resumes from its committed file offset, and the sink file ends
 * with exactly the source's lines. Then killed with -9: Connect is at-least-once there, so
 * only "nothing lost, order kept" is required (a replayed tail is allowed and counted).
 */
class DistributedFileConnectorsTest {
    static final String BOOTSTRAP = System.getProperty("strand.bootstrap", "127.0.0.1:22500");
    static final int REST_PORT = Integer.getInteger("connect.rest.port", 22520);
    static final String REST = "http://127.0.0.1:" + REST_PORT;
    static final int N = 1000;
    static final int M = 500;
    static final int K = 300;
    static final int EOS_MORE = 20_000;
    static final ObjectMapper JSON = new ObjectMapper();

    Path work;
    Admin admin;
    Process worker;
    final List<Path> workerLogs = new ArrayList<>();
    final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

    @BeforeEach
    void setUp() throws IOException {
        String base = System.getProperty("eco.workdir");
        Path root = base == null || base.isEmpty() || base.startsWith("${")
                ? Files.createTempDirectory("eco-connect")
                : Files.createDirectories(Path.of(base));
        work = Files.createTempDirectory(root, "connect");
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        admin = Admin.create(p);
    }

    @AfterEach
    void tearDown() throws InterruptedException {
        if (worker != null && worker.isAlive()) {
            worker.destroyForcibly();
            worker.waitFor();
        }
        if (admin != null) {
            admin.close(Duration.ofSeconds(5));
        }
    }

    static List<String> lines(int from, int to) {
        List<String> out = new ArrayList<>();
        for (int i = from; i < to; i++) {
            out.add(String.format("line %05d of the source file, with some text: %08x", i, i * 2654435761L & 0xffffffffL));
        }
        return out;
    }

    @Test
    void fileSourceToSinkSurvivesWorkerRestarts() throws Exception {
        String run = UUID.randomUUID().toString().substring(0, 8);
        String topic = "fs-lines-" + run;
        String group = "connect-" + run;
        String configs = group + "-configs";
        String offsets = group + "-offsets";
        String status = group + "-status";
        String source = "file-source-" + run;
        String sink = "file-sink-" + run;
        Path in = work.resolve("in.txt");
        Path out = work.resolve("out.txt");

        // One partition: the source's records have no key and the file order must survive.
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
        List<String> expected = new ArrayList<>(lines(0, N));
        append(in, expected);

        Path props = writeWorkerProps(group, configs, offsets, status);
        startWorker(props, 1);
        waitForRest();

        put(source, Map.of(
                "connector.class", "org.apache.kafka.connect.file.FileStreamSourceConnector",
                "tasks.max", "1",
                "file", in.toString(),
                "topic", topic));
        put(sink, Map.of(
                "connector.class", "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "tasks.max", "1",
                "file", out.toString(),
                "topics", topic));
        waitRunning(source);
        waitRunning(sink);
        waitFor("the sink file to have the first " + N + " lines", 60, () -> lineCount(out) >= N);
        assertEquals(expected, readLines(out), "sink file after the first " + N + " lines");

        // The worker's internal topics, created by Connect: compacted, with its partition counts.
        Map<String, TopicDescription> internal = admin.describeTopics(List.of(configs, offsets, status))
                .allTopicNames().get();
        assertEquals(1, internal.get(configs).partitions().size(), "config topic partitions");
        assertEquals(25, internal.get(offsets).partitions().size(), "offset topic partitions");
        assertEquals(5, internal.get(status).partitions().size(), "status topic partitions");
        List<ConfigResource> resources = List.of(configs, offsets, status).stream()
                .map(t -> new ConfigResource(ConfigResource.Type.TOPIC, t)).toList();
        Map<ConfigResource, Config> described = admin.describeConfigs(resources).all().get();
        for (ConfigResource r : resources) {
            assertEquals("compact", described.get(r).get("cleanup.policy").value(), r.name() + " cleanup.policy");
        }

        // Graceful stop, more lines, start again: the connectors come back by themselves and
        // the source goes on from its committed position — exactly N + M records and lines.
        stopWorker("worker 1");
        List<String> more = lines(N, N + M);
        append(in, more);
        expected.addAll(more);
        startWorker(props, 2);
        waitForRest();
        waitFor("the connectors to come back from the config topic", 60,
                () -> connectors().containsAll(List.of(source, sink)));
        assertEquals(new TreeSet<>(List.of(source, sink)), new TreeSet<>(connectors()), "connectors after restart");
        waitRunning(source);
        waitRunning(sink);
        waitFor("the sink to consume the topic to its end (" + (N + M) + " records)", 60, () ->
                endOffset(topic) >= N + M && committed("connect-" + sink, topic) >= endOffset(topic));
        assertEquals(N + M, endOffset(topic), "records in the topic after a graceful restart (a resent line would add one)");
        waitFor("the sink file to have " + (N + M) + " lines", 30, () -> lineCount(out) >= N + M);
        assertEquals(expected, readLines(out), "sink file after the graceful restart");

        // The offsets REST API (KIP-875): the source's file position from the offsets topic,
        // the sink's from its consumer group.
        long fileSize = Files.size(in);
        waitFor("GET /connectors/" + source + "/offsets to show the file's end", 30, () -> {
            JsonNode o = get("/connectors/" + source + "/offsets");
            return o != null && o.path("offsets").size() == 1
                    && o.path("offsets").get(0).path("offset").path("position").asLong() == fileSize;
        });
        JsonNode sinkOffsets = get("/connectors/" + sink + "/offsets");
        assertEquals(1, sinkOffsets.path("offsets").size(), "sink offsets " + sinkOffsets);
        JsonNode so = sinkOffsets.path("offsets").get(0);
        assertEquals(topic, so.path("partition").path("kafka_topic").asText(), "sink offsets " + sinkOffsets);
        assertEquals(N + M, so.path("offset").path("kafka_offset").asLong(), "sink offsets " + sinkOffsets);

        // kill -9, more lines, start again. Connect is at-least-once here: offsets not yet
        // flushed may be replayed, so only require every line, in order, maybe a replayed run.
        kill9("worker 2");
        List<String> last = lines(N + M, N + M + K);
        append(in, last);
        expected.addAll(last);
        startWorker(props, 3);
        waitForRest();
        waitFor("the connectors to come back after kill -9", 60,
                () -> connectors().containsAll(List.of(source, sink)));
        waitRunning(source);
        waitRunning(sink);
        waitFor("the sink file to hold all " + expected.size() + " lines", 60,
                () -> new LinkedHashSet<>(readLinesQuietly(out)).size() >= expected.size());
        List<String> got = readLines(out);
        List<String> firstSeen = new ArrayList<>(new LinkedHashSet<>(got));
        assertEquals(expected, firstSeen, "sink file after kill -9, duplicates removed");
        System.out.println("after kill -9: " + got.size() + " lines in the sink file for "
                + expected.size() + " distinct (" + (got.size() - expected.size()) + " replayed)");
        stopWorker("worker 3");
    }

    /**
     * Exactly-once source support (KIP-618): the worker's source task writes records and its
     * file offsets in one transaction (and the leader fences the task's producer over
     * Admin.fenceProducers). Killed with -9 right after more lines were appended, the topic
     * must still hold each line of the file once, in order, for read_committed readers.
     */
    @Test
    void exactlyOnceSourceHasNoDuplicatesAfterKill9() throws Exception {
        String run = UUID.randomUUID().toString().substring(0, 8);
        String topic = "eos-lines-" + run;
        String group = "connect-eos-" + run;
        String source = "eos-source-" + run;
        String sink = "eos-sink-" + run;
        Path in = work.resolve("eos-in.txt");
        Path out = work.resolve("eos-out.txt");
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
        List<String> expected = new ArrayList<>(lines(0, N));
        append(in, expected);

        Path props = writeWorkerProps(group, group + "-configs", group + "-offsets", group + "-status",
                // A restarted worker reads the offsets topic read_committed up to its high
                // watermark, so it waits for the killed task's open transaction to be aborted
                // by the broker: 10 s instead of the producer's default 60 s.
                Map.of("exactly.once.source.support", "enabled",
                        "producer.transaction.timeout.ms", "10000"));
        startWorker(props, 1);
        waitForRest();
        put(source, Map.of(
                "connector.class", "org.apache.kafka.connect.file.FileStreamSourceConnector",
                "tasks.max", "1",
                "file", in.toString(),
                "topic", topic,
                "exactly.once.support", "required",
                "transaction.boundary", "poll",
                // 100 lines a poll, so a transaction each: the kill lands mid-stream.
                "batch.size", "100"));
        put(sink, Map.of(
                "connector.class", "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "tasks.max", "1",
                "file", out.toString(),
                "topics", topic));
        waitRunning(source);
        waitRunning(sink);
        waitFor("the sink file to have the first " + N + " lines", 60, () -> lineCount(out) >= N);
        assertEquals(expected, readLines(out), "sink file after the first " + N + " lines");
        assertEquals(expected, readCommittedPayloads(topic), "read_committed records of the topic");

        // Many more lines, and kill -9 as soon as the source has started sending them.
        long before = endOffset(topic);
        List<String> more = lines(N, N + EOS_MORE);
        append(in, more);
        expected.addAll(more);
        waitFor("the source to start sending the new lines", 30, () -> endOffset(topic) > before);
        kill9("eos worker 1");
        long atKill = endOffset(topic);
        System.out.println("eos: killed with the topic's end offset at " + atKill + " of " + (expected.size() + 1000));

        startWorker(props, 2);
        waitForRest();
        waitFor("the connectors to come back after kill -9", 60,
                () -> connectors().containsAll(List.of(source, sink)));
        waitRunning(source);
        waitRunning(sink);
        waitFor("the sink file to hold all " + expected.size() + " lines", 90,
                () -> new LinkedHashSet<>(readLinesQuietly(out)).size() >= expected.size());
        List<String> committed = readCommittedPayloads(topic);
        System.out.println("eos: " + committed.size() + " committed records, end offset " + endOffset(topic));
        assertEquals(expected.size(), committed.size(), "read_committed records after kill -9");
        assertEquals(expected, committed, "read_committed records of the topic after kill -9 (exactly once: no line twice)");
        assertEquals(expected, new ArrayList<>(new LinkedHashSet<>(readLines(out))), "sink file, duplicates removed");
        stopWorker("eos worker 2");
    }

    /** The payloads of every committed record of partition 0, read with read_committed. */
    List<String> readCommittedPayloads(String topic) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", BOOTSTRAP);
        p.put("isolation.level", "read_committed");
        p.put("enable.auto.commit", "false");
        TopicPartition tp = new TopicPartition(topic, 0);
        List<String> out = new ArrayList<>();
        try (org.apache.kafka.clients.consumer.KafkaConsumer<byte[], byte[]> c = new org.apache.kafka.clients.consumer.KafkaConsumer<>(p,
                new org.apache.kafka.common.serialization.ByteArrayDeserializer(),
                new org.apache.kafka.common.serialization.ByteArrayDeserializer())) {
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            long end = c.endOffsets(List.of(tp)).get(tp); // the last stable offset
            long deadline = System.nanoTime() + 30_000_000_000L;
            while (c.position(tp) < end) {
                assertTrue(System.nanoTime() < deadline, "reading " + topic + " to " + end + " timed out");
                for (var r : c.poll(Duration.ofMillis(500))) {
                    out.add(JSON.readTree(r.value()).path("payload").asText());
                }
            }
        }
        return out;
    }

    // ---- the worker process ----

    Path writeWorkerProps(String group, String configs, String offsets, String status) throws IOException {
        return writeWorkerProps(group, configs, offsets, status, Map.of());
    }

    Path writeWorkerProps(String group, String configs, String offsets, String status, Map<String, String> extra)
            throws IOException {
        Properties p = new Properties();
        p.put("bootstrap.servers", BOOTSTRAP);
        p.put("group.id", group);
        p.put("key.converter", "org.apache.kafka.connect.json.JsonConverter");
        p.put("value.converter", "org.apache.kafka.connect.json.JsonConverter");
        p.put("key.converter.schemas.enable", "true");
        p.put("value.converter.schemas.enable", "true");
        p.put("config.storage.topic", configs);
        p.put("offset.storage.topic", offsets);
        p.put("status.storage.topic", status);
        p.put("config.storage.replication.factor", "1");
        p.put("offset.storage.replication.factor", "1");
        p.put("status.storage.replication.factor", "1");
        p.put("offset.flush.interval.ms", "1000");
        p.put("listeners", REST);
        p.put("rest.advertised.host.name", "127.0.0.1");
        p.put("rest.advertised.port", Integer.toString(REST_PORT));
        // A killed worker's membership must expire quickly for its successor.
        p.put("session.timeout.ms", "6000");
        p.put("heartbeat.interval.ms", "1500");
        p.put("scheduled.rebalance.max.delay.ms", "5000");
        p.put("consumer.session.timeout.ms", "6000");
        p.put("consumer.heartbeat.interval.ms", "1500");
        p.putAll(extra);
        Path file = work.resolve(group + ".properties");
        try (FileOutputStream o = new FileOutputStream(file.toFile())) {
            p.store(o, "distributed worker");
        }
        return file;
    }

    void startWorker(Path props, int runNo) throws IOException {
        Path log = work.resolve("worker" + runNo + ".log");
        workerLogs.add(log);
        String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = List.of(javaBin, "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Deco.kafka.log.level=" + System.getProperty("eco.app.log.level", "INFO"),
                "-Deco.debug.logger=" + System.getProperty("eco.debug.logger", "strand.eco.none"),
                "-cp", System.getProperty("java.class.path"),
                "org.apache.kafka.connect.cli.ConnectDistributed", props.toString());
        worker = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        // The runner kills whatever is listed here if this JVM dies before cleaning up.
        Files.writeString(work.resolve("pids"), worker.pid() + "\n",
                java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
        System.out.println("started worker " + runNo + " (pid " + worker.pid() + "), log " + log);
    }

    void stopWorker(String what) throws InterruptedException {
        assertTrue(worker.isAlive(), what + " died by itself:\n" + tails());
        worker.destroy(); // SIGTERM: ConnectDistributed's shutdown hook stops the herder
        if (!worker.waitFor(60, TimeUnit.SECONDS)) {
            worker.destroyForcibly();
            fail(what + " did not stop within 60 s of SIGTERM:\n" + tails());
        }
        System.out.println("stopped " + what);
    }

    void kill9(String what) throws InterruptedException {
        assertTrue(worker.isAlive(), what + " died by itself:\n" + tails());
        worker.destroyForcibly();
        worker.waitFor();
        System.out.println("killed " + what + " with -9");
    }

    String tails() {
        StringBuilder sb = new StringBuilder();
        for (Path log : workerLogs) {
            try {
                List<String> all = Files.readAllLines(log);
                sb.append("--- ").append(log).append(" (ERROR/WARN lines and the last 40 of ").append(all.size()).append(")\n");
                all.stream().filter(l -> l.contains(" ERROR ") || l.contains(" WARN ")).limit(40)
                        .forEach(l -> sb.append(l).append('\n'));
                sb.append("...\n");
                all.subList(Math.max(0, all.size() - 40), all.size()).forEach(l -> sb.append(l).append('\n'));
            } catch (IOException e) {
                sb.append("--- ").append(log).append(": ").append(e).append('\n');
            }
        }
        return sb.toString();
    }

    void waitFor(String what, int seconds, BooleanSupplier cond) throws InterruptedException {
        long start = System.nanoTime();
        long deadline = start + seconds * 1_000_000_000L;
        while (true) {
            if (cond.getAsBoolean()) {
                System.out.printf("%s: done after %.1f s%n", what, (System.nanoTime() - start) / 1e9);
                return;
            }
            if (worker != null && !worker.isAlive()) {
                fail("the worker exited (" + worker.exitValue() + ") while waiting for " + what + ":\n" + tails());
            }
            if (System.nanoTime() > deadline) {
                fail("timed out after " + seconds + " s waiting for " + what + ":\n" + tails());
            }
            Thread.sleep(250);
        }
    }

    // ---- REST ----

    HttpResponse<String> send(HttpRequest req) {
        try {
            return http.send(req, HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            return null;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RuntimeException(e);
        }
    }

    JsonNode get(String path) {
        HttpResponse<String> r = send(HttpRequest.newBuilder(URI.create(REST + path))
                .timeout(Duration.ofSeconds(10)).GET().build());
        if (r == null || r.statusCode() != 200) {
            return null;
        }
        try {
            return JSON.readTree(r.body());
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    void waitForRest() throws InterruptedException {
        waitFor("the worker's REST API", 90, () -> {
            JsonNode root = get("/");
            return root != null && root.hasNonNull("kafka_cluster_id");
        });
        JsonNode root = get("/");
        assertTrue(root.get("kafka_cluster_id").asText().startsWith("strand"), "cluster id " + root);
    }

    /** PUT /connectors/NAME/config (create or update); retried while the worker is rebalancing (409). */
    void put(String name, Map<String, String> config) throws Exception {
        String body = JSON.writeValueAsString(config);
        int[] last = {0};
        String[] lastBody = {""};
        waitFor("PUT connector " + name, 60, () -> {
            HttpResponse<String> r = send(HttpRequest.newBuilder(URI.create(REST + "/connectors/" + name + "/config"))
                    .timeout(Duration.ofSeconds(30))
                    .header("Content-Type", "application/json")
                    .PUT(HttpRequest.BodyPublishers.ofString(body)).build());
            if (r == null) {
                return false;
            }
            last[0] = r.statusCode();
            lastBody[0] = r.body();
            if (r.statusCode() == 409) {
                return false;
            }
            assertTrue(r.statusCode() == 201 || r.statusCode() == 200,
                    "PUT " + name + ": " + r.statusCode() + " " + r.body());
            return true;
        });
    }

    List<String> connectors() {
        JsonNode n = get("/connectors");
        List<String> out = new ArrayList<>();
        if (n != null) {
            n.forEach(x -> out.add(x.asText()));
        }
        return out;
    }

    void waitRunning(String name) throws InterruptedException {
        String[] lastSeen = {""};
        try {
            waitFor(name + " and its task to be RUNNING", 60, () -> {
                JsonNode s = get("/connectors/" + name + "/status");
                if (s == null) {
                    return false;
                }
                lastSeen[0] = s.toString();
                JsonNode tasks = s.get("tasks");
                if (!"RUNNING".equals(s.path("connector").path("state").asText()) || tasks == null || tasks.size() != 1) {
                    return false;
                }
                String state = tasks.get(0).path("state").asText();
                assertTrue(!"FAILED".equals(state), name + " task FAILED: " + s);
                return "RUNNING".equals(state);
            });
        } catch (AssertionError e) {
            throw new AssertionError(e.getMessage() + "\nlast status: " + lastSeen[0], e);
        }
    }

    // ---- Kafka ----

    long endOffset(String topic) {
        try {
            TopicPartition tp = new TopicPartition(topic, 0);
            return admin.listOffsets(Map.of(tp, OffsetSpec.latest())).all().get().get(tp).offset();
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    long committed(String group, String topic) {
        try {
            Map<TopicPartition, OffsetAndMetadata> m = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get();
            OffsetAndMetadata om = m.get(new TopicPartition(topic, 0));
            return om == null ? -1 : om.offset();
        } catch (Exception e) {
            return -1;
        }
    }

    // ---- files ----

    static void append(Path file, List<String> lines) throws IOException {
        StringBuilder sb = new StringBuilder();
        lines.forEach(l -> sb.append(l).append('\n'));
        Files.writeString(file, sb, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }

    static List<String> readLines(Path file) throws IOException {
        return Files.exists(file) ? Files.readAllLines(file) : List.of();
    }

    static List<String> readLinesQuietly(Path file) {
        try {
            return readLines(file);
        } catch (IOException e) {
            return List.of();
        }
    }

    static int lineCount(Path file) {
        return readLinesQuietly(file).size();
    }
}
