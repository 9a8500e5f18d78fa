"""Starts several `strand` nodes as one cluster for the cluster tests.

`Cluster(tmp_path, nodes=3, shards=1)` gives node i (1-based) its own directory
(tmp_path/node<i>: data dir and log), a client base port (shard k serves Kafka clients on
port + k) and an rpc base port (shard k serves peers on rpc port + k), all below 32768, and
starts each node as its own process:

    strand serve --node-id i --data-dir D --listen 127.0.0.1:P --rpc-listen 127.0.0.1:R
                 --peers 1@127.0.0.1:R1,2@127.0.0.1:R2,... --shards S --log-level info

A node (`cluster.node(i)`) is a conftest `Broker` that knows its cluster flags, so
`kill9()`, `start()`, `restart()`, `terminate()`, `running()` and `log()` work as they do
for the single-node tests, on the same data dir and ports every time.

`Cluster(..., proxied=True)` puts a TCP proxy (`NetProxy`: asyncio in a thread of the
test process) on every directed inter-node link: node i's --peers entry for node j is the
proxy of link (i, j), which listens on its own ports (one per shard, below 32768) and
forwards to node j's rpc port + k; node i's own entry stays its --rpc-listen address. Then
`cluster.cut(a, b)` breaks both directions between two nodes (live connections reset,
dials refused; or `mode="stall"`: a black hole that closes nothing), `cluster.isolate(a)`
cuts a node from every other, `cluster.delay(seconds, ...)` slows links down, and
`cluster.heal()` restores everything. Each node also advertises a proxy of its client
ports (`--advertise`), so `cluster.isolate(a, clients=True)` cuts it off from the clients
on the other side as well, while a client of its own port (`node.bootstrap`) still
reaches it. `cluster.close()` kills the nodes and stops the proxies.

Kafka broker ids: node N shard k is broker N * 1024 + k. The module also has small raw
protocol helpers (`metadata`, `create_topic_raw`, `fetch_error`, `produce_raw`,
`fetch_raw`, …) that ask one given node, where a real client would pick a broker itself
(librdkafka sends admin requests to the controller), and `replica_batches`, the batches
of one node's replica of a partition as its segment files hold them.
"""

import asyncio
import socket
import struct
import threading
import time
from collections import namedtuple

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from conftest import Broker, free_base_port

NODE_ID_STRIDE = 1024
FORM_TIMEOUT_S = 30


def broker_id(node_id, shard):
    return node_id * NODE_ID_STRIDE + shard


def node_of(broker):
    """The node id of a Kafka broker id (-1 for none)."""
    return broker // NODE_ID_STRIDE if broker >= 0 else -1


def wait_for(what, condition, timeout, interval=0.2):
    """Polls `condition()` until it returns a true value, which is returned."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Node(Broker):
    """One node of a cluster: a Broker with --node-id, --rpc-listen and --peers."""

    def __init__(self, cluster, node_id, port, rpc_port, extra):
        node_dir = cluster.tmp_path / f"node{node_id}"
        node_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(node_dir, shards=cluster.shards)
        self.cluster = cluster
        self.node_id = node_id
        self.port = port
        self.rpc_port = rpc_port
        self.user_extra = list(extra)

    def __repr__(self):
        return f"node{self.node_id}(:{self.port}, rpc :{self.rpc_port})"

    @property
    def rpc_address(self):
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def rpc_ports(self):
        return [self.rpc_port + k for k in range(self.shards)]

    @property
    def broker_ids(self):
        return [broker_id(self.node_id, k) for k in range(self.shards)]

    @property
    def advertised_bootstrap(self):
        """Where Metadata sends clients: the clients' proxy of a proxied cluster, else the
        node's own port."""
        port = self.cluster.client_proxy_ports.get(self.node_id, self.port)
        return f"127.0.0.1:{port}"

    def cluster_args(self):
        args = [
            "--node-id", str(self.node_id),
            "--rpc-listen", self.rpc_address,
            "--peers", self.cluster.peers_for(self),
        ]
        if self.cluster.proxy is not None:
            args += ["--advertise", self.advertised_bootstrap]
        return args

    def spawn(self):
        # conftest's Broker.spawn adds --data-dir, --listen, --shards and --log-level.
        self.extra = [*self.cluster_args(), *self.user_extra]
        return super().spawn()

    def crashed(self):
        """True if the process exited without being stopped by the harness."""
        return self.proc is not None and self.proc.poll() is not None

    def admin(self, **config):
        return AdminClient({"bootstrap.servers": self.bootstrap, **config})

    def list_topics(self, timeout=5):
        """confluent-kafka metadata (all topics) from a fresh AdminClient bootstrapped on this
        node only: its first request goes to this node's shard 0."""
        return self.admin().list_topics(timeout=timeout)


class Cluster:
    def __init__(self, tmp_path, nodes=3, shards=1, extra=(), proxied=False):
        assert nodes >= 1 and shards >= 1
        self.tmp_path = tmp_path
        self.shards = shards
        # One block of free ports: every node's client ports, then every node's rpc ports,
        # then (proxied) the proxies' ports, `shards` for each directed link and for each
        # node's clients.
        span = nodes * shards
        links = nodes * (nodes - 1) + nodes if proxied else 0
        base = free_base_port(2 * span + links * shards)
        self.nodes = [
            Node(self, i, base + (i - 1) * shards, base + span + (i - 1) * shards, extra)
            for i in range(1, nodes + 1)
        ]
        self.proxy = None
        self.proxy_ports = {}  # (src node id, dst node id) -> the proxy's base port
        self.client_proxy_ports = {}  # node id -> the base port of its clients' proxy
        if proxied:
            at = base + 2 * span
            for a in self.nodes:
                for b in self.nodes:
                    if a is not b:
                        self.proxy_ports[(a.node_id, b.node_id)] = at
                        at += shards
            for a in self.nodes:
                self.client_proxy_ports[a.node_id] = at
                at += shards
            links = [(a, b, port, self.node(b).rpc_port, shards)
                     for (a, b), port in self.proxy_ports.items()]
            links += [(CLIENTS, a, port, self.node(a).port, shards)
                      for a, port in self.client_proxy_ports.items()]
            self.proxy = NetProxy(links)

    @property
    def peers(self):
        return ",".join(f"{n.node_id}@{n.rpc_address}" for n in self.nodes)

    def peers_for(self, node):
        """`node`'s --peers: its own rpc address, and (proxied) the proxy of its link to
        each other node."""
        if self.proxy is None:
            return self.peers
        return ",".join(
            f"{n.node_id}@{n.rpc_address}" if n is node
            else f"{n.node_id}@127.0.0.1:{self.proxy_ports[(node.node_id, n.node_id)]}"
            for n in self.nodes)

    def node(self, node_id):
        """Node `node_id` (1-based)."""
        assert 1 <= node_id <= len(self.nodes), node_id
        return self.nodes[node_id - 1]

    def live(self):
        return [n for n in self.nodes if n.running()]

    def broker_ids(self, nodes=None):
        return sorted(b for n in (self.nodes if nodes is None else nodes) for b in n.broker_ids)

    def bootstrap_all(self, nodes=None):
        return ",".join(n.bootstrap for n in (self.nodes if nodes is None else nodes))

    def advertised_bootstrap_all(self, nodes=None):
        """Bootstrap through the addresses Metadata advertises (the clients' proxies of a
        proxied cluster): a client that `isolate(..., clients=True)` cuts off too."""
        return ",".join(n.advertised_bootstrap for n in (self.nodes if nodes is None else nodes))

    def node_of_port(self, port):
        for n in self.nodes:
            if port in n.ports:
                return n
        raise KeyError(port)

    def start(self, nodes=None):
        """Starts the given nodes (default: every one not running) together, then waits until
        each has logged "ready" and listens on all its client ports."""
        todo = [n for n in (self.nodes if nodes is None else nodes) if not n.running()]
        started = [(n, n.spawn()) for n in todo]
        try:
            for n, log_from in started:
                n.wait_ready(log_from)
        except BaseException:
            for n, _ in started:
                n.kill9()
            raise

    def kill9_all(self):
        for n in self.nodes:
            n.kill9()

    stop_all = kill9_all

    def terminate_all(self, timeout=30):
        """SIGTERM to every running node at once; {node id: exit code} once all exited (a
        node still running after `timeout` is killed and counted as None)."""
        running = [n for n in self.nodes if n.proc is not None]
        for n in running:
            if n.proc.poll() is None:
                n.proc.terminate()
        codes = {}
        deadline = time.time() + timeout
        for n in running:
            try:
                codes[n.node_id] = n.proc.wait(timeout=max(0.1, deadline - time.time()))
            except Exception:
                codes[n.node_id] = None
                n.proc.kill()
                n.proc.wait()
            n.proc = None
        return codes

    def formed_view(self, n):
        """(ok, why) for one live node's metadata: every live node's shards are brokers and
        the controller is shard 0 of a live node."""
        try:
            md = n.list_topics(timeout=2)
        except KafkaException as e:
            return False, f"{n}: {e}"
        live = self.live()
        missing = set(self.broker_ids(live)) - set(md.brokers)
        controller = node_of(md.controller_id)
        if missing:
            return False, f"{n}: brokers {sorted(md.brokers)}, missing {sorted(missing)}"
        if md.controller_id < 0 or controller not in [m.node_id for m in live]:
            return False, f"{n}: controller_id {md.controller_id}"
        return True, md.controller_id

    def wait_formed(self, timeout=FORM_TIMEOUT_S):
        """Polls every live node's metadata (confluent-kafka AdminClient) until each lists
        every live node's brokers and names a controller on a live node. Returns
        {node id: controller id} as seen last."""
        deadline = time.time() + timeout
        why = "never asked"
        while True:
            views = {}
            for n in self.live():
                ok, detail = self.formed_view(n)
                if not ok:
                    why = detail
                    break
                views[n.node_id] = detail
            else:
                if views:
                    return views
                why = "no node running"
            if time.time() >= deadline:
                raise AssertionError(f"cluster not formed after {timeout}s: {why}")
            for n in self.nodes:
                if n.crashed():
                    raise AssertionError(f"{n} exited with {n.proc.returncode}")
            time.sleep(0.2)

    def controller_node(self, timeout=FORM_TIMEOUT_S):
        """The node leading the metadata Raft group, once every live node's metadata names
        the same controller, on a live node."""
        deadline = time.time() + timeout

        def agreed():
            views = self.wait_formed(max(1.0, deadline - time.time()))
            ids = set(views.values())
            return len(ids) == 1 and self.node(node_of(ids.pop()))
        return wait_for("the live nodes to agree on the controller", agreed, timeout)

    # ---------------------------------------------------------- network faults (proxied)

    def _ids(self, nodes):
        return [n.node_id if isinstance(n, Node) else n for n in nodes]

    def _pairs(self, a=None, b=None, both_ways=True):
        """The directed inter-node links between a and b; from or to a if b is None; all
        of them if a is None."""
        assert self.proxy is not None, "network faults need Cluster(..., proxied=True)"
        a, b = (None if x is None else self._ids([x])[0] for x in (a, b))
        pairs = []
        for (src, dst) in self.proxy_ports:
            if a is None or (b is None and a in (src, dst)):
                pairs.append((src, dst))
            elif (src, dst) == (a, b) or (both_ways and (src, dst) == (b, a)):
                pairs.append((src, dst))
        assert pairs, (a, b)
        return pairs

    def cut(self, a, b, mode="reset", both_ways=True):
        """Cuts the links between nodes a and b (ids or Nodes): both directions, or only
        a -> b (what a sends to b) with both_ways=False. mode "reset": connections reset,
        dials refused; "stall": nothing forwarded, nothing closed."""
        self.proxy.cut(self._pairs(a, b, both_ways), mode)

    def isolate(self, a, mode="reset", clients=False):
        """Cuts node a from every other node, both ways; with clients=True, also from
        the clients that reach it through its advertised address (a client connected to
        its own port still does: the isolated side of the partition)."""
        pairs = self._pairs(a)
        if clients:
            pairs.append((CLIENTS, self._ids([a])[0]))
        self.proxy.cut(pairs, mode)

    def heal(self):
        """Restores every link, the clients' too: no cut, no delay."""
        pairs = list(self.proxy.links)
        self.proxy.set_delay(pairs, 0.0)
        self.proxy.heal(pairs)

    def delay(self, seconds, a=None, b=None):
        """Adds `seconds` to what goes over the inter-node links between a and b (both
        ways), of a, or (default) all of them."""
        self.proxy.set_delay(self._pairs(a, b), seconds)

    def link_stats(self):
        """{(src, dst): {state, delay, accepted, bytes, connections, target_down}}."""
        return self.proxy.stats() if self.proxy is not None else {}

    def close(self):
        """Kills every node and stops the proxies."""
        self.kill9_all()
        if self.proxy is not None:
            self.proxy.close()

    def dump_logs(self, max_chars=200_000):
        out = []
        for n in self.nodes:
            log = n.log()
            if len(log) > max_chars:
                log = f"[... {len(log) - max_chars} chars cut ...]\n" + log[-max_chars:]
            out.append(f"--- {n} log ({n.log_path}) ---\n{log}")
        return "\n".join(out)

    def panicked(self):
        return [n.node_id for n in self.nodes if "panicked" in n.log()]


# ------------------------------------------------------------------ network faults

CLIENTS = "clients"  # the source of a node's clients' proxy, in NetProxy's links


class _Link:
    """One directed inter-node link (node src dialling node dst) through the proxy: shard
    k listens on listen_base + k and forwards to dst's rpc port + k. Lives on the proxy's
    event loop and is touched only from it."""

    def __init__(self, src, dst, listen_base, target_base, shards):
        self.src = src
        self.dst = dst
        self.listen_base = listen_base
        self.target_base = target_base
        self.shards = shards
        self.state = "open"  # "open", or cut: "reset" or "stall"
        self.delay = 0.0  # seconds added to every chunk, either way
        self.open = asyncio.Event()
        self.open.set()
        self.servers = {}  # shard -> asyncio.Server, while it listens
        self.target_down = set()  # shards whose target refused a connection (probed)
        self.conns = set()  # _Conn
        self.accepted = 0  # connections accepted
        self.bytes = 0  # bytes forwarded, both ways

    def __repr__(self):
        return f"link {self.src}->{self.dst} (:{self.listen_base})"


class _Conn:
    """One proxied connection: the accepted (downstream) side, the upstream one, and the
    tasks that pump between them."""

    def __init__(self, writer):
        self.down = writer
        self.up = None
        self.tasks = set()

    def abort(self):
        for w in (self.down, self.up):
            if w is not None:
                w.transport.abort()  # an RST, not a FIN: both ends see the link break
        current = asyncio.current_task()
        for t in self.tasks:
            if t is not current:
                t.cancel()


class NetProxy:
    """TCP proxies for the inter-node links of a cluster, on one asyncio loop in a daemon
    thread of the test process. Node i dials node j through the proxy of link (i, j), so
    each direction of each pair can be cut, stalled or delayed on its own:

    - "reset" cut: live connections are aborted (RST both ways) and the link's ports stop
      listening, so that dials are refused until healed;
    - "stall" cut (a black hole): nothing more is forwarded either way and nothing is
      closed; connections accepted meanwhile are held unconnected. Buffers fill and
      senders block, as behind a silent network partition; healed, what was held is
      forwarded (TCP loses nothing, so neither does the proxy);
    - delay: every chunk is forwarded `delay` seconds after it was read, in order.

    A proxy is otherwise transparent: a connection refused by the target (a node that is
    down) makes the proxy refuse dials too, until a probe connects to the target again;
    either end closing or breaking a connection breaks the other end.
    """

    PROBE_S = 0.1  # how often a target that refused is tried again

    def __init__(self, links):
        """links: [(src, dst, listen_base, target_base, shards)]."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="net-proxy", daemon=True)
        self.links = {}
        self.closed = False
        self.thread.start()
        try:
            self._call(self._start(links))
        except BaseException:
            self.close()
            raise

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro, timeout=30):
        """Runs `coro` on the proxy's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, links):
        for src, dst, listen_base, target_base, shards in links:
            link = _Link(src, dst, listen_base, target_base, shards)
            self.links[(src, dst)] = link
            await self._listen(link)

    async def _listen(self, link, patience=10.0):
        """Listens on the link's ports (but those of a target that is down); a port that
        another process holds for a moment (a free-port probe) is tried for `patience` s."""
        for k in range(link.shards):
            if k in link.servers or k in link.target_down:
                continue
            deadline = time.monotonic() + patience
            while True:
                try:
                    link.servers[k] = await asyncio.start_server(
                        lambda r, w, k=k: self._serve(link, k, r, w),
                        "127.0.0.1", link.listen_base + k, reuse_address=True, backlog=64)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(0.1)

    def _stop_listening(self, link, k):
        server = link.servers.pop(k, None)
        if server is not None:
            server.close()

    async def _probe(self, link, k):
        """The target of shard k refused: refuse dials until it accepts a connection again
        (closed at once, before any byte: the node takes that silently)."""
        self._stop_listening(link, k)
        while True:
            await asyncio.sleep(self.PROBE_S)
            try:
                _, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", link.target_base + k), 2)
            except (OSError, asyncio.TimeoutError):
                continue
            w.transport.abort()
            break
        link.target_down.discard(k)
        if link.state != "reset":
            await self._listen(link)

    async def _serve(self, link, k, reader, writer):
        conn = _Conn(writer)
        conn.tasks.add(asyncio.current_task())
        link.conns.add(conn)
        link.accepted += 1
        try:
            if link.state == "reset":
                return  # accepted just before the cut closed the listener
            await link.open.wait()  # a stalled link holds new connections unconnected
            if link.state == "reset":
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", link.target_base + k), 5)
            except (ConnectionRefusedError, asyncio.TimeoutError):
                if k not in link.target_down:
                    link.target_down.add(k)
                    asyncio.ensure_future(self._probe(link, k))
                return
            conn.up = up_writer
            pumps = [asyncio.ensure_future(self._pump(link, reader, up_writer)),
                     asyncio.ensure_future(self._pump(link, up_reader, writer))]
            conn.tasks.update(pumps)
            # Either side ending ends both, as with a direct connection.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            conn.abort()
            link.conns.discard(conn)

    async def _pump(self, link, reader, writer):
        """Forwards one direction: read, wait out the delay, write, in order."""
        queue = asyncio.Queue(maxsize=256)

        async def send():
            while True:
                due, data = await queue.get()
                if data is None:
                    return
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await link.open.wait()
                writer.write(data)
                await writer.drain()
                link.bytes += len(data)

        sender = asyncio.ensure_future(send())
        try:
            while True:
                await link.open.wait()
                data = await reader.read(1 << 16)
                if not data:
                    break
                await link.open.wait()
                await queue.put((self.loop.time() + link.delay, data))
                if sender.done():
                    return
            await queue.put((0, None))
            await sender
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sender.cancel()

    async def _cut(self, pairs, mode):
        for pair in pairs:
            link = self.links[pair]
            link.open.clear()
            if mode == "reset":
                link.state = "reset"
                for k in list(link.servers):
                    self._stop_listening(link, k)
                for conn in list(link.conns):
                    conn.abort()
            elif link.state != "reset":
                link.state = "stall"

    async def _heal(self, pairs):
        for pair in pairs:
            link = self.links[pair]
            if link.state == "reset":
                await self._listen(link)
            link.state = "open"
            link.open.set()

    async def _set_delay(self, pairs, seconds):
        for pair in pairs:
            self.links[pair].delay = seconds

    async def _stats(self):
        return {pair: {"state": link.state, "delay": link.delay, "accepted": link.accepted,
                       "bytes": link.bytes, "connections": len(link.conns),
                       "target_down": sorted(link.target_down)}
                for pair, link in self.links.items()}

    async def _close(self):
        for link in self.links.values():
            link.state = "reset"
            link.open.clear()
            for k in list(link.servers):
                self._stop_listening(link, k)
            for conn in list(link.conns):
                conn.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cut(self, pairs, mode="reset"):
        """Cuts the given directed links ([(src, dst)])."""
        assert mode in ("reset", "stall"), mode
        self._call(self._cut(list(pairs), mode))

    def heal(self, pairs=None):
        """Restores the given directed links (default: all)."""
        self._call(self._heal(list(self.links) if pairs is None else list(pairs)))

    def set_delay(self, pairs, seconds):
        self._call(self._set_delay(list(pairs), seconds))

    def stats(self):
        """{(src, dst): {state, delay, accepted, bytes, connections, target_down}}."""
        return self._call(self._stats())

    def close(self):
        """Stops every proxy (connections aborted, ports closed) and the loop's thread."""
        if self.closed:
            return
        self.closed = True
        try:
            self._call(self._close(), timeout=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# ------------------------------------------------------------------ raw protocol, one node

Metadata = namedtuple("Metadata", "brokers controller_id topics")
# brokers: {id: (host, port)}; topics: {name: (error_code, {partition: leader})}

NONE = 0
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
TOPIC_ALREADY_EXISTS = 36
INVALID_REPLICATION_FACTOR = 38
NOT_CONTROLLER = 41


def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _recv(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the broker")
        out += chunk
    return bytes(out)


def _read_string(buf, at):
    n = struct.unpack_from(">h", buf, at)[0]
    at += 2
    if n < 0:
        return None, at
    return buf[at:at + n].decode(), at + n


def call(port, api_key, version, body, timeout=10, correlation_id=7):
    """One request (v1 header) to 127.0.0.1:port on a new connection; the response body
    after the correlation id."""
    msg = struct.pack(">hhi", api_key, version, correlation_id) + _string("cluster-test") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", _recv(sock, 4))[0]
        response = _recv(sock, size)
    assert struct.unpack(">i", response[:4])[0] == correlation_id
    return response[4:]


def metadata(port, timeout=10):
    """Metadata v1 for all topics (which never auto-creates one) from 127.0.0.1:port."""
    response = call(port, 3, 1, struct.pack(">i", -1), timeout)
    count = struct.unpack_from(">i", response, 0)[0]
    at = 4
    brokers = {}
    for _ in range(count):
        node_id = struct.unpack_from(">i", response, at)[0]
        host, at = _read_string(response, at + 4)
        port_ = struct.unpack_from(">i", response, at)[0]
        _, at = _read_string(response, at + 4)  # rack
        brokers[node_id] = (host, port_)
    controller_id, count = struct.unpack_from(">ii", response, at)
    at += 8
    topics = {}
    for _ in range(count):
        error_code = struct.unpack_from(">h", response, at)[0]
        name, at = _read_string(response, at + 2)
        at += 1  # is_internal
        partitions = {}
        n_partitions = struct.unpack_from(">i", response, at)[0]
        at += 4
        for _ in range(n_partitions):
            _, index, leader = struct.unpack_from(">hii", response, at)
            at += 10
            for _ in range(2):  # replicas, isr
                at += 4 + 4 * struct.unpack_from(">i", response, at)[0]
            partitions[index] = leader
        topics[name] = (error_code, partitions)
    assert at == len(response), f"metadata v1: {len(response) - at} bytes left over"
    return Metadata(brokers, controller_id, topics)


def create_topic_raw(port, name, partitions, replication_factor=1, timeout_ms=10_000,
                     socket_timeout=30):
    """CreateTopics v2 for one topic sent to 127.0.0.1:port itself (no controller lookup):
    (error code, error message)."""
    body = (struct.pack(">i", 1) + _string(name)
            + struct.pack(">ihii", partitions, replication_factor, 0, 0)
            + struct.pack(">ib", timeout_ms, 0))
    response = call(port, 19, 2, body, socket_timeout)
    # throttle_time_ms, [name, error_code, error_message]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == name, got
    error_code = struct.unpack_from(">h", response, at)[0]
    message, _ = _read_string(response, at + 2)
    return error_code, message


def fetch_error(port, topic, partition, offset=0):
    """Fetch v4 (no wait) of one partition sent to 127.0.0.1:port: its error code."""
    t = topic.encode()
    body = (struct.pack(">iiiib", -1, 0, 1, 1 << 20, 0)
            + struct.pack(">ih", 1, len(t)) + t
            + struct.pack(">iiqi", 1, partition, offset, 1 << 20))
    response = call(port, 1, 4, body)
    # throttle_time_ms, [topic, [partition, error_code, ...]]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == topic, got
    assert struct.unpack_from(">i", response, at)[0] == 1
    index, error_code = struct.unpack_from(">ih", response, at + 4)
    assert index == partition
    return error_code


def delete_topic_raw(port, name, timeout_ms=10_000, socket_timeout=30):
    """DeleteTopics v1 for one topic sent to 127.0.0.1:port itself: its error code."""
    body = struct.pack(">i", 1) + _string(name) + struct.pack(">i", timeout_ms)
    response = call(port, 20, 1, body, socket_timeout)
    # throttle_time_ms, [name, error_code]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == name, got
    return struct.unpack_from(">h", response, at)[0]


def create_partitions_raw(port, name, count, timeout_ms=10_000, socket_timeout=30):
    """CreatePartitions v0 (grow `name` to `count` partitions, placement left to the
    broker) sent to 127.0.0.1:port itself: (error code, error message)."""
    body = (struct.pack(">i", 1) + _string(name) + struct.pack(">ii", count, -1)
            + struct.pack(">ib", timeout_ms, 0))
    response = call(port, 37, 0, body, socket_timeout)
    # throttle_time_ms, [name, error_code, error_message]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == name, got
    error_code = struct.unpack_from(">h", response, at)[0]
    message, _ = _read_string(response, at + 2)
    return error_code, message


TOPIC_RESOURCE = 2


def alter_topic_configs_raw(port, name, configs, socket_timeout=30):
    """AlterConfigs v0 of one topic (`configs` becomes its whole override set) sent to
    127.0.0.1:port itself: (error code, error message)."""
    body = (struct.pack(">ib", 1, TOPIC_RESOURCE) + _string(name) + struct.pack(">i", len(configs))
            + b"".join(_string(k) + _string(v) for k, v in configs.items())
            + struct.pack(">b", 0))
    response = call(port, 33, 0, body, socket_timeout)
    # throttle_time_ms, [error_code, error_message, resource_type, resource_name]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    error_code = struct.unpack_from(">h", response, 8)[0]
    message, at = _read_string(response, 10)
    got, _ = _read_string(response, at + 1)
    assert got == name, got
    return error_code, message


def topic_config_raw(port, name, key):
    """DescribeConfigs v1 of one topic config asked of 127.0.0.1:port: (error code, value)."""
    body = (struct.pack(">ib", 1, TOPIC_RESOURCE) + _string(name) + struct.pack(">i", 1)
            + _string(key) + struct.pack(">b", 0))
    response = call(port, 32, 1, body)
    # throttle_time_ms, [error_code, error_message, type, name,
    #                    [name, value, read_only, source, is_sensitive, [synonyms]]]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    error_code = struct.unpack_from(">h", response, 8)[0]
    _, at = _read_string(response, 10)
    got, at = _read_string(response, at + 1)
    assert got == name, got
    count = struct.unpack_from(">i", response, at)[0]
    at += 4
    values = {}
    for _ in range(count):
        config, at = _read_string(response, at)
        value, at = _read_string(response, at)
        at += 3  # read_only, config_source, is_sensitive
        synonyms = struct.unpack_from(">i", response, at)[0]
        at += 4
        for _ in range(synonyms):
            _, at = _read_string(response, at)
            _, at = _read_string(response, at)
            at += 1
        values[config] = value
    assert at == len(response), f"describe configs v1: {len(response) - at} bytes left over"
    return error_code, values.get(key)


def _records_batch(values):
    """One uncompressed v2 record batch (kafka-python's builder) holding `values`."""
    from kafka.record.memory_records import MemoryRecordsBuilder
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    now = int(time.time() * 1000)
    for v in values:
        builder.append(timestamp=now, key=None, value=v)
    builder.close()
    return bytes(builder.buffer())


def produce_raw(port, topic, partition, values, acks=-1, timeout_ms=2000, socket_timeout=15):
    """Produce v3 of one batch (no producer id) sent to 127.0.0.1:port itself, no retry:
    (error code, base offset)."""
    batch = _records_batch(values)
    body = (struct.pack(">hhi", -1, acks, timeout_ms) + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">iii", 1, partition, len(batch)) + batch)
    response = call(port, 0, 3, body, socket_timeout)
    # [topic, [partition, error_code, base_offset, log_append_time]], throttle_time_ms
    assert struct.unpack_from(">i", response, 0)[0] == 1
    got, at = _read_string(response, 4)
    assert got == topic, got
    assert struct.unpack_from(">i", response, at)[0] == 1
    index, error_code, base_offset = struct.unpack_from(">ihq", response, at + 4)
    assert index == partition
    return error_code, base_offset


def fetch_raw(port, topic, partition, offset=0, max_bytes=8 << 20, socket_timeout=15):
    """Fetch v4 (read uncommitted, no wait) of one partition sent to 127.0.0.1:port itself:
    (error code, high watermark, [(offset, value)] of the data records returned)."""
    from kafka.record.memory_records import MemoryRecords
    t = topic.encode()
    body = (struct.pack(">iiiib", -1, 0, 1, max_bytes, 0)
            + struct.pack(">ih", 1, len(t)) + t
            + struct.pack(">iiqi", 1, partition, offset, max_bytes))
    response = call(port, 1, 4, body, socket_timeout)
    # throttle_time_ms, [topic, [partition, error_code, high_watermark, last_stable_offset,
    #                            [aborted transactions], records]]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == topic, got
    assert struct.unpack_from(">i", response, at)[0] == 1
    index, error_code, high_watermark, _ = struct.unpack_from(">ihqq", response, at + 4)
    assert index == partition
    at += 4 + 4 + 2 + 8 + 8
    aborted = struct.unpack_from(">i", response, at)[0]
    at += 4 + 16 * max(aborted, 0)
    size = struct.unpack_from(">i", response, at)[0]
    at += 4
    records = []
    if size > 0:
        for batch in MemoryRecords(response[at:at + size]):
            if batch.is_control_batch:
                continue
            records.extend((r.offset, r.value) for r in batch)
    return error_code, high_watermark, records


def replica_batches(node, topic, partition):
    """The raw bytes of every record batch in one node's replica of a partition (its
    segment files in order, up to the first hole), as [(base offset, last offset, bytes)]."""
    out = []
    dirs = [d for d in node.data_dir.rglob(f"{topic}-{partition}") if d.is_dir()]
    assert len(dirs) <= 1, dirs
    for part_dir in dirs:
        for path in sorted(part_dir.glob("*.log")):
            data = path.read_bytes()
            at = 0
            while at + 61 <= len(data):
                base, length = struct.unpack_from(">qi", data, at)
                if length <= 0 or at + 12 + length > len(data):
                    break
                last = base + struct.unpack_from(">i", data, at + 23)[0]
                out.append((base, last, data[at:at + 12 + length]))
                at += 12 + length
    return out
