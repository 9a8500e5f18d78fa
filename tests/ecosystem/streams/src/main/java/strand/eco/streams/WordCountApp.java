package strand.eco.streams;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Word count with exactly-once v2, run as its own process so a test can kill it with -9.
 *
 * <p>lines (input) → words → groupBy(word) [repartition topic "words"] → count [store
 * "counts", changelog] → output (word → count). Arguments: a properties file with the
 * Streams configuration plus {@code input.topic}, {@code output.topic} and
 * {@code line.delay.micros} (a pause per input line, so a crash lands mid-stream).
 */
public final class WordCountApp {
    public static final String REPARTITION_NAME = "words";
    public static final String STORE_NAME = "counts";

    public static Topology topology(String input, String output, long lineDelayMicros) {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> lines =
                builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()));
        lines.flatMapValues(line -> {
                    if (lineDelayMicros > 0) {
                        LockSupport.parkNanos(lineDelayMicros * 1000);
                    }
                    return Arrays.asList(line.split(" "));
                })
                .groupBy((key, word) -> word,
                        Grouped.with(REPARTITION_NAME, Serdes.String(), Serdes.String()))
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(STORE_NAME)
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Serdes.Long()))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        return builder.build();
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        Properties props = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        String input = (String) props.remove("input.topic");
        String output = (String) props.remove("output.topic");
        long delay = Long.parseLong((String) props.remove("line.delay.micros"));
        props.putIfAbsent(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.putIfAbsent(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");

        Topology topology = topology(input, output, delay);
        System.out.println(topology.describe());
        KafkaStreams streams = new KafkaStreams(topology, props);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("stream thread failed: " + e);
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            System.out.println("STATE " + before + " -> " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        // SIGTERM closes the application cleanly; the exit code then tells whether it had failed.
        sun.misc.Signal.handle(new sun.misc.Signal("TERM"), sig -> stopped.countDown());
        streams.setGlobalStateRestoreListener(new org.apache.kafka.streams.processor.StateRestoreListener() {
            @Override
            public void onRestoreStart(org.apache.kafka.common.TopicPartition tp, String store, long start, long end) {
                System.out.println("RESTORE_START " + store + " " + tp + " " + start + ".." + end);
            }

            @Override
            public void onBatchRestored(org.apache.kafka.common.TopicPartition tp, String store, long batchEnd, long n) {
            }

            @Override
            public void onRestoreEnd(org.apache.kafka.common.TopicPartition tp, String store, long total) {
                System.out.println("RESTORE_END " + store + " " + tp + " " + total);
            }
        });
        streams.start();
        stopped.await();
        boolean failed = streams.state() == KafkaStreams.State.ERROR;
        streams.close();
        System.out.println("STOPPED " + streams.state());
        System.exit(failed ? 2 : 0);
    }
}
