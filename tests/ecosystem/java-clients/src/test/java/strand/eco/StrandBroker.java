package strand.eco;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * One Strand broker per test class: a fresh data directory, two shards on loopback ports in
 * 22000–22499 (shard k on base + k), killed when the class is done.
 *
 * <p>The binary comes from the {@code strand.bin} system property (the runner sets it from
 * STRAND_BIN); data and logs go under {@code strand.workdir}. Every pid is appended to
 * {@code strand.workdir/pids} so that the runner can kill what a crashed JVM left behind.
 */
public final class StrandBroker implements BeforeAllCallback, AfterAllCallback {
    public static final int SHARDS = 2;
    private static final int PORT_FIRST = 22000;
    private static final int PORT_LAST = 22499;
    private static final Duration READY_TIMEOUT = Duration.ofSeconds(30);
    private static int nextPort = PORT_FIRST;

    private final List<String> extraArgs;
    private Path dir;
    private Path logFile;
    private int basePort;
    private Process process;

    public StrandBroker(String... extraArgs) {
        this.extraArgs = List.of(extraArgs);
    }

    public String bootstrap() {
        return "127.0.0.1:" + basePort;
    }

    public int basePort() {
        return basePort;
    }

    public Path logFile() {
        return logFile;
    }

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        Path work = Path.of(System.getProperty("strand.workdir",
                System.getProperty("java.io.tmpdir") + "/strand-eco-java"));
        dir = work.resolve(context.getRequiredTestClass().getSimpleName() + "-"
                + UUID.randomUUID().toString().substring(0, 8));
        Files.createDirectories(dir);
        logFile = dir.resolve("broker.log");
        basePort = freeBasePort(SHARDS);
        start();
    }

    @Override
    public void afterAll(ExtensionContext context) {
        stop();
        String log = log();
        if (log.contains("panicked")) {
            throw new AssertionError("the broker panicked; log: " + logFile + "\n" + tail(log, 4000));
        }
    }

    /** Starts the broker and waits until it logged "ready" and every shard port accepts. */
    public void start() throws IOException, InterruptedException {
        String bin = System.getProperty("strand.bin");
        if (bin == null || bin.isEmpty() || !Files.isExecutable(Path.of(bin))) {
            throw new IllegalStateException("strand.bin is not an executable: " + bin);
        }
        long logFrom = Files.exists(logFile) ? Files.size(logFile) : 0;
        List<String> cmd = new ArrayList<>(List.of(bin, "serve",
                "--data-dir", dir.resolve("data").toString(),
                "--listen", bootstrap(),
                "--shards", Integer.toString(SHARDS),
                "--log-level", "info"));
        cmd.addAll(extraArgs);
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(ProcessBuilder.Redirect.appendTo(logFile.toFile()));
        process = pb.start();
        Path pids = dir.getParent().resolve("pids");
        Files.writeString(pids, process.pid() + "\n", StandardCharsets.UTF_8,
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        final Process started = process;
        Runtime.getRuntime().addShutdownHook(new Thread(started::destroyForcibly));

        long deadline = System.nanoTime() + READY_TIMEOUT.toNanos();
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new IllegalStateException("broker exited with " + process.exitValue()
                        + ":\n" + tail(log(), 4000));
            }
            if (log().substring((int) Math.min(logFrom, log().length())).contains("ready")
                    && allAccept()) {
                return;
            }
            Thread.sleep(50);
        }
        stop();
        throw new IllegalStateException("broker not ready after " + READY_TIMEOUT + ":\n" + tail(log(), 4000));
    }

    /** kill -9 and wait for the process to be gone. */
    public void stop() {
        if (process != null) {
            process.destroyForcibly();
            try {
                process.waitFor(30, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            process = null;
        }
    }

    public String log() {
        try {
            return Files.readString(logFile, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "";
        }
    }

    private static String tail(String s, int n) {
        return s.length() <= n ? s : s.substring(s.length() - n);
    }

    private boolean allAccept() {
        for (int k = 0; k < SHARDS; k++) {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", basePort + k), 1000);
            } catch (IOException e) {
                return false;
            }
        }
        return true;
    }

    /** The next base such that base .. base + count - 1 are free, within the port range. */
    private static synchronized int freeBasePort(int count) {
        for (int tries = 0; tries < (PORT_LAST - PORT_FIRST); tries++) {
            if (nextPort + count - 1 > PORT_LAST) {
                nextPort = PORT_FIRST;
            }
            int base = nextPort;
            nextPort += count;
            if (free(base, count)) {
                return base;
            }
        }
        throw new IllegalStateException("no free ports in " + PORT_FIRST + "-" + PORT_LAST);
    }

    private static boolean free(int base, int count) {
        List<ServerSocket> held = new ArrayList<>();
        try {
            for (int k = 0; k < count; k++) {
                ServerSocket s = new ServerSocket();
                held.add(s);
                s.bind(new InetSocketAddress("127.0.0.1", base + k));
            }
            return true;
        } catch (IOException e) {
            return false;
        } finally {
            for (ServerSocket s : held) {
                try {
                    s.close();
                } catch (IOException ignored) {
                }
            }
        }
    }
}
