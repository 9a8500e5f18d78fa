import assert from 'node:assert/strict'
import kafkajs from 'kafkajs'
import { kafkaTest, makeKafka, uniq, createTopics, eventually } from '../helpers.mjs'

const { ConfigResourceTypes } = kafkajs

const topicConfig = async (admin, topic, name) => {
  const { resources } = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
  })
  assert.equal(resources.length, 1)
  assert.equal(resources[0].errorCode, 0, `describeConfigs error ${resources[0].errorCode}`)
  const entry = resources[0].configEntries.find((e) => e.configName === name)
  assert.ok(entry, `no ${name} among ${resources[0].configEntries.length} configs of ${topic}`)
  return entry
}

// Topic admin: createTopics (validateOnly, configs, a duplicate), listTopics,
// fetchTopicMetadata, describeConfigs/alterConfigs, createPartitions, deleteTopics.
kafkaTest('admin: topics and configs', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const a = uniq('js-adm-a')
  const b = uniq('js-adm-b')

  // validateOnly creates nothing. (waitForLeaders would ask for the metadata of
  // a topic that does not exist, which fails with UNKNOWN_TOPIC_OR_PARTITION: the
  // admin client does not auto-create topics.)
  assert.equal(await admin.createTopics({ validateOnly: true, waitForLeaders: false, topics: [{ topic: a, numPartitions: 3, replicationFactor: 1 }] }), true)
  assert.ok(!(await admin.listTopics()).includes(a), 'validateOnly created the topic')

  const created = await admin.createTopics({
    waitForLeaders: true,
    topics: [
      { topic: a, numPartitions: 3, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '3600000' }] },
      { topic: b, numPartitions: 2, replicationFactor: 1 },
    ],
  })
  assert.equal(created, true)
  // A topic that exists already: kafkajs answers false (TOPIC_ALREADY_EXISTS).
  assert.equal(await admin.createTopics({ topics: [{ topic: b, numPartitions: 1, replicationFactor: 1 }] }), false)

  const names = await admin.listTopics()
  assert.ok(names.includes(a) && names.includes(b), 'listTopics has both')

  const { topics } = await admin.fetchTopicMetadata({ topics: [a, b] })
  const byName = Object.fromEntries(topics.map((x) => [x.name, x]))
  assert.equal(byName[a].partitions.length, 3)
  assert.equal(byName[b].partitions.length, 2)
  for (const p of [...byName[a].partitions, ...byName[b].partitions]) {
    assert.equal(p.partitionErrorCode, 0)
    assert.ok(p.leader === 0 || p.leader === 1, `leader ${p.leader}`)
    assert.deepEqual(p.replicas, [p.leader])
    assert.deepEqual(p.isr, [p.leader])
  }
  const cluster = await admin.describeCluster()
  assert.deepEqual(cluster.brokers.map((x) => x.nodeId).sort(), [0, 1])

  // describeConfigs: the override and a default.
  let e = await topicConfig(admin, a, 'retention.ms')
  assert.equal(e.configValue, '3600000')
  assert.equal(e.isDefault, false)
  e = await topicConfig(admin, a, 'cleanup.policy')
  assert.equal(e.configValue, 'delete')
  assert.equal(e.isDefault, true)

  // alterConfigs (non-incremental): the given entries become the whole override set.
  await admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: a, configEntries: [{ name: 'cleanup.policy', value: 'compact' }, { name: 'max.message.bytes', value: '300000' }] }],
  })
  e = await topicConfig(admin, a, 'cleanup.policy')
  assert.equal(e.configValue, 'compact')
  assert.equal(e.isDefault, false)
  assert.equal((await topicConfig(admin, a, 'max.message.bytes')).configValue, '300000')
  e = await topicConfig(admin, a, 'retention.ms')
  assert.notEqual(e.configValue, '3600000', 'retention.ms override survived a wholesale alterConfigs')
  assert.equal(e.isDefault, true)

  // validateOnly alterConfigs changes nothing; an invalid value is refused.
  await admin.alterConfigs({
    validateOnly: true,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: a, configEntries: [{ name: 'cleanup.policy', value: 'delete' }] }],
  })
  assert.equal((await topicConfig(admin, a, 'cleanup.policy')).configValue, 'compact')
  await assert.rejects(admin.alterConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: a, configEntries: [{ name: 'cleanup.policy', value: 'bogus' }] }],
  }))
  assert.equal((await topicConfig(admin, a, 'cleanup.policy')).configValue, 'compact')

  // Broker resources: readable, not alterable (the broker's settings are its flags).
  const { resources: [broker] } = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.BROKER, name: '0' }],
  })
  assert.equal(broker.errorCode, 0)
  assert.ok(broker.configEntries.length > 0, 'broker 0 describes no configs')
  await assert.rejects(admin.alterConfigs({
    resources: [{ type: ConfigResourceTypes.BROKER, name: '0', configEntries: [{ name: 'log.retention.ms', value: '1000' }] }],
  }))

  await admin.createPartitions({ topicPartitions: [{ topic: b, count: 4 }] })
  await eventually('4 partitions of b', async () => {
    const { topics: [md] } = await admin.fetchTopicMetadata({ topics: [b] })
    return md.partitions.length === 4
  }, 10000)

  await admin.deleteTopics({ topics: [a, b] })
  await eventually('deleted topics gone', async () => {
    const left = await admin.listTopics()
    return !left.includes(a) && !left.includes(b)
  }, 10000)
})

// Offsets: fetchTopicOffsets (low/high), fetchTopicOffsetsByTimestamp, and after
// deleteTopicRecords.
kafkaTest('admin: topic offsets and offsets by timestamp', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-adm-offsets')
  await createTopics(admin, [topic], 2)
  const producer = kafka.producer({ idempotent: true })
  await producer.connect()
  defer(() => producer.disconnect())
  const base = Math.floor(Date.now() / 1000) * 1000 - 3600 * 1000
  await producer.send({
    topic,
    acks: -1,
    messages: Array.from({ length: 10 }, (_, i) => ({ partition: 0, value: String(i), timestamp: String(base + i * 1000) })),
  })

  const offsets = await admin.fetchTopicOffsets(topic)
  const p = (list, n) => list.find((x) => x.partition === n)
  assert.equal(p(offsets, 0).low, '0')
  assert.equal(p(offsets, 0).high, '10')
  assert.equal(p(offsets, 0).offset, '10')
  assert.equal(p(offsets, 1).high, '0')

  let byTs = await admin.fetchTopicOffsetsByTimestamp(topic, base + 5500)
  assert.equal(p(byTs, 0).offset, '6')
  byTs = await admin.fetchTopicOffsetsByTimestamp(topic, base + 4000)
  assert.equal(p(byTs, 0).offset, '4')
  // After the last timestamp: Kafka answers -1, which kafkajs turns into the high watermark.
  byTs = await admin.fetchTopicOffsetsByTimestamp(topic, base + 60000)
  assert.equal(p(byTs, 0).offset, '10')

  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '3' }] })
  const after = await admin.fetchTopicOffsets(topic)
  assert.equal(p(after, 0).low, '3')
  assert.equal(p(after, 0).high, '10')
})

// Groups: describeGroups of a live group, fetchOffsets after commits,
// resetOffsets to the earliest (the next member reads everything again) and to
// the latest (the next member reads only what is new).
kafkaTest('admin: describeGroups, fetchOffsets, resetOffsets', async (t, defer) => {
  const kafka = makeKafka('js-adm-groups')
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-adm-groups')
  const groupId = uniq('js-adm-group')
  await createTopics(admin, [topic], 2)
  const producer = kafka.producer({ idempotent: true })
  await producer.connect()
  defer(() => producer.disconnect())
  const produce = (tag, n) => producer.send({
    topic,
    acks: -1,
    messages: Array.from({ length: 2 * n }, (_, i) => ({ partition: i % 2, value: `${tag}-${i}` })),
  })
  await produce('a', 10)

  const runMember = async (want) => {
    const got = []
    const c = kafka.consumer({ groupId, maxWaitTimeInMs: 200, heartbeatInterval: 500 })
    await c.connect()
    defer(() => c.disconnect())
    await c.subscribe({ topic, fromBeginning: true })
    await c.run({ eachMessage: async ({ partition, message }) => { got.push({ partition, offset: Number(message.offset), value: message.value.toString() }) } })
    await eventually(`${want} messages (got ${got.length})`, () => got.length >= want)
    return { c, got }
  }

  const { c: first, got } = await runMember(20)
  assert.equal(got.length, 20)
  const { groups: [live] } = await admin.describeGroups([groupId])
  assert.equal(live.groupId, groupId)
  assert.equal(live.state, 'Stable')
  assert.equal(live.protocolType, 'consumer')
  assert.equal(live.members.length, 1)
  assert.equal(live.members[0].clientId, 'js-adm-groups')
  assert.ok(live.members[0].memberAssignment.length > 0, 'member assignment is empty')
  // A running group cannot be reset.
  await assert.rejects(admin.resetOffsets({ groupId, topic, earliest: true }), /running instances/)
  await first.disconnect()

  const offsetsOf = async () => {
    const [{ partitions }] = await admin.fetchOffsets({ groupId, topics: [topic] })
    return partitions.map((x) => [x.partition, x.offset]).sort()
  }
  await eventually('committed offsets 10/10', async () => JSON.stringify(await offsetsOf()) === JSON.stringify([[0, '10'], [1, '10']]), 10000)
  const { groups: [empty] } = await admin.describeGroups([groupId])
  assert.equal(empty.state, 'Empty')
  assert.equal(empty.members.length, 0)
  const listed = await admin.listGroups()
  assert.ok(listed.groups.some((g) => g.groupId === groupId && g.protocolType === 'consumer'), 'listGroups has the group')

  // kafkajs resets by committing the sentinel offsets -2 (earliest) and -1
  // (latest) as a member of the group; fetchOffsets shows them as stored, and
  // fetchOffsets with resolveOffsets turns them into real offsets and commits those.
  const rawOffsets = async () => {
    const [{ partitions }] = await admin.fetchOffsets({ groupId, topics: [topic] })
    return partitions.map((x) => [x.partition, x.offset]).sort()
  }

  // Reset to the earliest: the next member reads all 20 again.
  await admin.resetOffsets({ groupId, topic, earliest: true })
  assert.deepEqual(await rawOffsets(), [[0, '-2'], [1, '-2']])
  const [{ partitions: resolved }] = await admin.fetchOffsets({ groupId, topics: [topic], resolveOffsets: true })
  assert.deepEqual(resolved.map((x) => [x.partition, x.offset]).sort(), [[0, '0'], [1, '0']])
  assert.deepEqual(await rawOffsets(), [[0, '0'], [1, '0']], 'resolveOffsets committed the earliest offsets')
  const { c: second, got: again } = await runMember(20)
  assert.deepEqual(again.filter((m) => m.partition === 0).map((m) => m.offset), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  await second.disconnect()
  await eventually('committed offsets 10/10 again', async () => JSON.stringify(await offsetsOf()) === JSON.stringify([[0, '10'], [1, '10']]), 10000)

  // Reset to the latest after new messages: the next member reads only newer ones.
  await produce('b', 5)
  await admin.resetOffsets({ groupId, topic, earliest: false })
  assert.deepEqual(await rawOffsets(), [[0, '-1'], [1, '-1']])
  const [{ partitions: latestResolved }] = await admin.fetchOffsets({ groupId, topics: [topic], resolveOffsets: true })
  assert.deepEqual(latestResolved.map((x) => [x.partition, x.offset]).sort(), [[0, '15'], [1, '15']])
  await produce('c', 3)
  const { got: latest } = await runMember(6)
  assert.ok(latest.every((m) => m.value.startsWith('c-')), `read ${latest.map((m) => m.value)} after a reset to the latest`)
  assert.deepEqual(latest.filter((m) => m.partition === 0).map((m) => m.offset), [15, 16, 17])
})

// deleteGroups: an empty group is deleted with its offsets; a group with a
// member is refused (NON_EMPTY_GROUP).
kafkaTest('admin: deleteGroups', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-adm-delgroup')
  const empty = uniq('js-adm-empty')
  const live = uniq('js-adm-live')
  await createTopics(admin, [topic], 1)
  const producer = kafka.producer({ idempotent: true })
  await producer.connect()
  defer(() => producer.disconnect())
  await producer.send({ topic, acks: -1, messages: [{ value: 'x' }, { value: 'y' }] })

  // A group with committed offsets and no members: one consumer commits and leaves.
  for (const groupId of [empty, live]) {
    const c = kafka.consumer({ groupId, maxWaitTimeInMs: 200 })
    await c.connect()
    defer(() => c.disconnect())
    let n = 0
    await c.subscribe({ topic, fromBeginning: true })
    await c.run({ eachMessage: async () => { n++ } })
    await eventually(`${groupId} consumed 2 (got ${n})`, () => n >= 2)
    if (groupId === empty) await c.disconnect()
  }
  await eventually('the empty group committed', async () => {
    const [{ partitions: [p] }] = await admin.fetchOffsets({ groupId: empty, topics: [topic] })
    return p.offset === '2'
  }, 10000)

  await admin.deleteGroups([empty])
  const [{ partitions: [gone] }] = await admin.fetchOffsets({ groupId: empty, topics: [topic] })
  assert.equal(gone.offset, '-1', 'offsets of a deleted group')
  const { groups } = await admin.listGroups()
  assert.ok(!groups.some((g) => g.groupId === empty), 'deleted group still listed')

  await assert.rejects(admin.deleteGroups([live]), (err) => {
    assert.equal(err.groups?.[0]?.error?.type, 'NON_EMPTY_GROUP', `${err.name}: ${err.message}`)
    return true
  })
})
