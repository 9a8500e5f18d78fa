"""Authorization: Kafka's StandardAuthorizer model with confluent-kafka (docs/security.md).

One broker per test with a PLAINTEXT and a SASL_PLAINTEXT listener, `--authorizer standard`
and two SCRAM users: `admin` (a super user) and `bob`. The admin manages ACLs with
AdminClient create_acls/describe_acls/delete_acls; bob is denied produce, consume and topic
creation (librdkafka's TOPIC_AUTHORIZATION_FAILED / GROUP_AUTHORIZATION_FAILED) until ACLs
allow them; PREFIXED grants, a DENY beating an ALLOW, Metadata hiding what bob may not
describe, an idempotent producer allowed by WRITE on a topic, DescribeConfigs and
ListGroups checked per resource, ACLs surviving a restart, `--allow-everyone-if-no-acl-found`, and the ACL APIs
answering SECURITY_DISABLED without an authorizer.
"""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from conftest import Broker, free_base_port
from test_security import set_user

USERS = {"admin": "admin-secret-1", "bob": "bob-secret-1"}


class AclBroker:
    def __init__(self, tmp_path, extra=()):
        self.broker = Broker(tmp_path)
        b = self.broker
        while True:
            port = free_base_port(b.shards)
            if port + b.shards <= b.port or port >= b.port + b.shards:
                break
        self.sasl_port = port
        b.extra = [
            "--listeners", f"PLAINTEXT://127.0.0.1:{b.port},SASL_PLAINTEXT://127.0.0.1:{port}",
            "--authorizer", "standard",
            "--super-users", "User:admin",
            *extra,
        ]
        for name, password in USERS.items():
            set_user(b.data_dir, name, password, tmp_path)

    def conf(self, user, **extra):
        conf = {
            "bootstrap.servers": f"127.0.0.1:{self.sasl_port}",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": USERS[user],
        }
        conf.update(extra)
        return conf

    def admin(self, user="admin"):
        return AdminClient(self.conf(user))


@pytest.fixture
def acl_broker(tmp_path, request):
    ab = AclBroker(tmp_path)
    ab.broker.start()
    yield ab
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        print(ab.broker.log()[-20000:])
    ab.broker.kill9()
    assert "panicked" not in ab.broker.log()


def create_topic(admin, name, partitions=1):
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(timeout=30)


def allow(principal, rtype, name, op, pattern=ResourcePatternType.LITERAL, perm=AclPermissionType.ALLOW):
    return AclBinding(rtype, name, pattern, principal, "*", op, perm)


def create_acls(admin, bindings):
    for f in admin.create_acls(bindings).values():
        f.result(timeout=30)


def produce_error(ab, user, topic, **conf):
    """The delivery error of one message (None if it was written)."""
    errors = []
    p = Producer(ab.conf(user, **{"message.timeout.ms": 10000, **conf}))
    p.produce(topic, b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    assert errors, "no delivery report"
    return errors[0]


def consume_error(ab, user, topic, group):
    """The first error a consumer of `topic` in `group` gets, or the first message."""
    c = Consumer(ab.conf(user, **{"group.id": group, "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                return msg.error()
            return msg
        raise AssertionError("neither a message nor an error")
    finally:
        c.close()


def test_denied_until_acls_allow(acl_broker):
    ab = acl_broker
    admin = ab.admin()
    topic = f"t-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic)

    # No ACL: bob may not write, read, create or even see the topic.
    err = produce_error(ab, "bob", topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    bob_admin = ab.admin("bob")
    assert topic not in bob_admin.list_topics(timeout=10).topics
    assert topic in admin.list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as e:
        create_topic(bob_admin, f"bobs-{topic}")
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Nor manage ACLs.
    with pytest.raises(KafkaException) as e:
        create_acls(bob_admin, [allow("User:bob", ResourceType.TOPIC, topic, AclOperation.ALL)])
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    create_acls(admin, [
        allow("User:bob", ResourceType.TOPIC, topic, AclOperation.WRITE),
        allow("User:bob", ResourceType.TOPIC, topic, AclOperation.READ),
        allow("User:bob", ResourceType.GROUP, group, AclOperation.READ),
    ])
    described = admin.describe_acls(
        AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:bob", None,
                         AclOperation.ANY, AclPermissionType.ANY)
    ).result(timeout=30)
    assert sorted((b.restype, b.name, b.operation) for b in described) == sorted([
        (ResourceType.TOPIC, topic, AclOperation.WRITE),
        (ResourceType.TOPIC, topic, AclOperation.READ),
        (ResourceType.GROUP, group, AclOperation.READ),
    ])

    assert produce_error(ab, "bob", topic) is None
    # WRITE and READ imply DESCRIBE: the topic is listed now.
    assert topic in bob_admin.list_topics(timeout=10).topics
    msg = consume_error(ab, "bob", topic, group)
    assert not msg.error() and msg.value() == b"v"
    # Another group is not bob's.
    err = consume_error(ab, "bob", topic, f"other-{group}")
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err

    # Deleting the WRITE grant closes writing again.
    deleted = admin.delete_acls([
        AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:bob", "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    ])
    for f in deleted.values():
        assert len(f.result(timeout=30)) == 1
    err = produce_error(ab, "bob", topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_prefixed_grant_and_deny_beats_allow(acl_broker):
    ab = acl_broker
    admin = ab.admin()
    prefix = f"pay-{uuid.uuid4().hex[:6]}-"
    for name in ("a", "secret", "b"):
        create_topic(admin, prefix + name)
    create_acls(admin, [
        allow("User:bob", ResourceType.TOPIC, prefix, AclOperation.WRITE, ResourcePatternType.PREFIXED),
        allow("User:bob", ResourceType.TOPIC, prefix + "secret", AclOperation.ALL,
              perm=AclPermissionType.DENY),
        # A wildcard-principal ALLOW is beaten by bob's DENY too.
        allow("User:*", ResourceType.TOPIC, prefix + "secret", AclOperation.WRITE),
    ])
    assert produce_error(ab, "bob", prefix + "a") is None
    assert produce_error(ab, "bob", prefix + "b") is None
    err = produce_error(ab, "bob", prefix + "secret")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    bob_admin = ab.admin("bob")
    topics = bob_admin.list_topics(timeout=10).topics
    assert prefix + "a" in topics and prefix + "secret" not in topics
    # The super user is not subject to ACLs.
    assert produce_error(ab, "admin", prefix + "secret") is None
    # A MATCH filter finds the literal and the prefixed bindings naming a topic.
    matched = admin.describe_acls(
        AclBindingFilter(ResourceType.TOPIC, prefix + "secret", ResourcePatternType.MATCH, None, None,
                         AclOperation.ANY, AclPermissionType.ANY)
    ).result(timeout=30)
    assert len(matched) == 3


def test_idempotence_configs_and_groups(acl_broker):
    ab = acl_broker
    admin = ab.admin()
    topic = f"t-{uuid.uuid4().hex[:8]}"
    group = f"admins-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic)
    create_acls(admin, [allow("User:bob", ResourceType.TOPIC, topic, AclOperation.WRITE)])
    # An idempotent producer's InitProducerId: WRITE on any topic is enough (Kafka 3+).
    assert produce_error(ab, "bob", topic, **{"enable.idempotence": True}) is None
    bob_admin = ab.admin("bob")
    # WRITE does not imply DESCRIBE_CONFIGS.
    futures = bob_admin.describe_configs([ConfigResource("topic", topic)])
    with pytest.raises(KafkaException) as e:
        list(futures.values())[0].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The admin's group exists, but bob may not describe it: not listed to him.
    msg = consume_error(ab, "admin", topic, group)
    assert not msg.error()
    listed = lambda a: {g.group_id for g in a.list_consumer_groups().result(timeout=30).valid}
    assert group in listed(admin)
    assert group not in listed(bob_admin)
    create_acls(admin, [allow("User:bob", ResourceType.GROUP, group, AclOperation.DESCRIBE)])
    assert group in listed(bob_admin)


def test_acls_survive_restart(acl_broker):
    ab = acl_broker
    admin = ab.admin()
    topic = f"t-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic)
    create_acls(admin, [allow("User:bob", ResourceType.TOPIC, topic, AclOperation.WRITE)])
    ab.broker.restart()
    admin = ab.admin()
    described = admin.describe_acls(
        AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, None, None,
                         AclOperation.ANY, AclPermissionType.ANY)
    ).result(timeout=30)
    assert [(b.principal, b.operation) for b in described] == [("User:bob", AclOperation.WRITE)]
    assert produce_error(ab, "bob", topic) is None


def test_allow_everyone_if_no_acl_found(tmp_path):
    ab = AclBroker(tmp_path, extra=["--allow-everyone-if-no-acl-found"])
    ab.broker.start()
    try:
        admin = ab.admin()
        topic = f"t-{uuid.uuid4().hex[:8]}"
        create_topic(admin, topic)
        # No ACL names the topic: open to everyone.
        assert produce_error(ab, "bob", topic) is None
        # Once one does, only what it grants.
        create_acls(admin, [allow("User:carol", ResourceType.TOPIC, topic, AclOperation.WRITE)])
        err = produce_error(ab, "bob", topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    finally:
        ab.broker.kill9()


def test_acl_apis_without_authorizer(broker):
    """SECURITY_DISABLED, as Kafka without `authorizer.class.name` (librdkafka's
    describe_acls drops the top-level error; kafka-python raises it)."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KResourceType
    from kafka.errors import SecurityDisabledError

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(SecurityDisabledError):
            admin.describe_acls(ACLFilter(
                principal=None, host=None, operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY),
            ))
    finally:
        admin.close()
