import assert from 'node:assert/strict'
import { kafkaTest, makeKafka, uniq, createTopics, eventually } from '../helpers.mjs'

// Two members of a group share a four-partition topic two partitions each; every
// message is consumed once; after both stop, the committed offsets are the ends
// of the partitions, and a new member resumes from them.
kafkaTest('consumer group: two members, each message once, resume from commits', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-group')
  const groupId = uniq('js-group')
  await createTopics(admin, [topic], 4)

  const consumed = [] // { member, partition, offset, value }
  const assignments = new Map()
  const start = async (member) => {
    const c = kafka.consumer({ groupId, maxWaitTimeInMs: 200, heartbeatInterval: 500, sessionTimeout: 10000 })
    await c.connect()
    defer(() => c.disconnect())
    c.on(c.events.GROUP_JOIN, ({ payload }) => {
      assignments.set(member, (payload.memberAssignment[topic] || []).slice().sort())
    })
    await c.subscribe({ topic, fromBeginning: true })
    await c.run({
      eachMessage: async ({ partition, message }) => {
        consumed.push({ member, partition, offset: Number(message.offset), value: message.value.toString() })
      },
    })
    return c
  }
  const m1 = await start('m1')
  const m2 = await start('m2')
  await eventually('both members with two partitions each', () => {
    const a = assignments.get('m1') || []
    const b = assignments.get('m2') || []
    return a.length === 2 && b.length === 2 && new Set([...a, ...b]).size === 4
  })

  const producer = kafka.producer({ idempotent: true })
  await producer.connect()
  defer(() => producer.disconnect())
  const produce = async (tag, perPartition) => {
    const messages = []
    for (let p = 0; p < 4; p++) for (let i = 0; i < perPartition; i++) messages.push({ partition: p, value: `${tag}-${p}-${i}` })
    await producer.send({ topic, acks: -1, messages })
  }
  await produce('a', 50)
  await eventually(`200 messages consumed (got ${consumed.length})`, () => consumed.length >= 200)

  const values = new Set(consumed.map((m) => m.value))
  assert.equal(values.size, 200, 'distinct messages')
  assert.equal(consumed.length, 200, 'no message consumed twice')
  for (const m of consumed) {
    assert.ok(assignments.get(m.member).includes(m.partition), `${m.member} consumed partition ${m.partition} it was not assigned`)
  }

  // Both stop; their last offsets are committed.
  await m1.disconnect()
  await m2.disconnect()
  await eventually('committed offsets at 50 on every partition', async () => {
    const [{ partitions }] = await admin.fetchOffsets({ groupId, topics: [topic] })
    return partitions.length === 4 && partitions.every((p) => p.offset === '50')
  }, 15000)
  const described = await admin.describeGroups([groupId])
  assert.equal(described.groups[0].state, 'Empty')

  // New messages, then a new member: it starts at the committed offsets.
  await produce('b', 5)
  consumed.length = 0
  await start('m3')
  await eventually(`20 new messages consumed (got ${consumed.length})`, () => consumed.length >= 20)
  const byPartition = new Map()
  for (const m of consumed) {
    assert.ok(m.value.startsWith('b-'), `resumed member re-read ${m.value}`)
    byPartition.set(m.partition, [...(byPartition.get(m.partition) || []), m.offset])
  }
  for (let p = 0; p < 4; p++) {
    assert.deepEqual(byPartition.get(p), [50, 51, 52, 53, 54], `partition ${p}`)
  }
})

// seek, pause and resume while running: a seek moves the member back, a paused
// partition delivers nothing until resumed, and the other partition goes on.
kafkaTest('consumer: seek, pause and resume', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-seek')
  const groupId = uniq('js-seek-group')
  await createTopics(admin, [topic], 2)
  const producer = kafka.producer({ idempotent: true })
  await producer.connect()
  defer(() => producer.disconnect())
  const produce = (tag, n) => producer.send({
    topic,
    acks: -1,
    messages: Array.from({ length: 2 * n }, (_, i) => ({ partition: i % 2, value: `${tag}-${i % 2}-${i >> 1}` })),
  })
  await produce('a', 10)

  const got = []
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 200 })
  await consumer.connect()
  defer(() => consumer.disconnect())
  await consumer.subscribe({ topic, fromBeginning: true })
  await consumer.run({ eachMessage: async ({ partition, message }) => { got.push({ partition, offset: Number(message.offset), value: message.value.toString() }) } })
  await eventually(`20 messages (got ${got.length})`, () => got.length >= 20)

  // Back to offset 5 of partition 0: offsets 5..9 again.
  got.length = 0
  consumer.seek({ topic, partition: 0, offset: '5' })
  await eventually(`5 messages after the seek (got ${got.length})`, () => got.length >= 5)
  assert.deepEqual(got.map((m) => [m.partition, m.offset]), [[0, 5], [0, 6], [0, 7], [0, 8], [0, 9]])

  // Pause partition 1: new messages arrive only from partition 0.
  got.length = 0
  consumer.pause([{ topic, partitions: [1] }])
  assert.deepEqual(consumer.paused(), [{ topic, partitions: [1] }])
  await produce('b', 3)
  await eventually(`3 messages of partition 0 (got ${got.length})`, () => got.length >= 3)
  // Partition 1's three messages are in the log, and a fetch or two later they
  // still have not been delivered.
  const [p1] = (await admin.fetchTopicOffsets(topic)).filter((p) => p.partition === 1)
  assert.equal(p1.high, '13')
  let fetches = 0
  const off = consumer.on(consumer.events.FETCH, () => { fetches++ })
  await eventually('three more fetches', () => fetches >= 3)
  off()
  assert.ok(got.every((m) => m.partition === 0), `paused partition delivered: ${JSON.stringify(got)}`)

  consumer.resume([{ topic, partitions: [1] }])
  await eventually(`partition 1's messages after resume (got ${got.length})`, () => got.length >= 6)
  assert.deepEqual(got.filter((m) => m.partition === 1).map((m) => m.offset), [10, 11, 12])
})
