import assert from 'node:assert/strict'
import { kafkaTest, makeKafka, uniq, createTopics, eventually, readAll } from '../helpers.mjs'

// producer.transaction(): a committed transaction (send + sendOffsets), an aborted
// one, and a committed one after it. A read_committed consumer sees the two
// committed transactions' messages only; the group's offsets are those of the
// committed transactions; read_uncommitted sees everything.
kafkaTest('transactions: send + sendOffsets + commit, abort, read_committed', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const input = uniq('js-txn-in')
  const output = uniq('js-txn-out')
  const groupId = uniq('js-txn-group')
  await createTopics(admin, [input, output], 2)

  const plain = kafka.producer({ idempotent: true })
  await plain.connect()
  defer(() => plain.disconnect())
  const inputs = []
  for (let p = 0; p < 2; p++) for (let i = 0; i < 30; i++) inputs.push({ partition: p, value: `in-${p}-${i}` })
  await plain.send({ topic: input, acks: -1, messages: inputs })

  const producer = kafka.producer({ transactionalId: uniq('js-txn-id'), idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  defer(() => producer.disconnect())

  // Transaction 1: the first 20 inputs of each partition, their offsets committed.
  const transform = (from, to, prefix) => {
    const out = []
    for (let p = 0; p < 2; p++) for (let i = from; i < to; i++) out.push({ partition: p, key: `in-${p}-${i}`, value: `${prefix}-${p}-${i}` })
    return out
  }
  const offsetsAt = (offset) => ({ consumerGroupId: groupId, topics: [{ topic: input, partitions: [{ partition: 0, offset: String(offset) }, { partition: 1, offset: String(offset) }] }] })

  let partitions
  let txn = await producer.transaction()
  await txn.send({ topic: output, messages: transform(0, 20, 'committed') })
  await txn.sendOffsets(offsetsAt(20))
  await txn.commit()

  // Transaction 2: the last 10 of each partition, aborted with its offsets.
  txn = await producer.transaction()
  await txn.send({ topic: output, messages: transform(20, 30, 'aborted') })
  await txn.sendOffsets(offsetsAt(30))
  // While the transaction is open its offsets are pending: OffsetFetch (v4 from
  // kafkajs, before require_stable) answers the last committed ones.
  ;[{ partitions }] = await admin.fetchOffsets({ groupId, topics: [input] })
  assert.deepEqual(partitions.map((p) => [p.partition, p.offset]).sort(), [[0, '20'], [1, '20']], 'offsets with the transaction open')
  await txn.abort()

  ;[{ partitions }] = await admin.fetchOffsets({ groupId, topics: [input] })
  assert.deepEqual(partitions.map((p) => [p.partition, p.offset]).sort(), [[0, '20'], [1, '20']], 'offsets after the abort')

  // Transaction 3: the same last 10 again, committed.
  txn = await producer.transaction()
  await txn.send({ topic: output, messages: transform(20, 30, 'committed') })
  await txn.sendOffsets(offsetsAt(30))
  await txn.commit()

  ;[{ partitions }] = await admin.fetchOffsets({ groupId, topics: [input] })
  assert.deepEqual(partitions.map((p) => [p.partition, p.offset]).sort(), [[0, '30'], [1, '30']], 'offsets after the last commit')

  const committed = await readAll(kafka, output, 60, { readUncommitted: false })
  const values = committed.map((m) => m.value)
  assert.equal(values.filter((v) => v.startsWith('aborted')).length, 0, 'read_committed saw aborted messages')
  assert.equal(new Set(values).size, 60)
  for (let p = 0; p < 2; p++) for (let i = 0; i < 30; i++) assert.ok(values.includes(`committed-${p}-${i}`), `committed-${p}-${i} missing`)

  // Three transactions: 20 + 10 + 10 messages and three markers per partition.
  const ends = await admin.fetchTopicOffsets(output)
  for (const p of ends) assert.equal(p.high, '43', `partition ${p.partition} end`)

  const all = await readAll(kafka, output, 80, { readUncommitted: true })
  assert.equal(all.filter((m) => m.value.startsWith('aborted')).length, 20, 'read_uncommitted sees the aborted messages')
  assert.equal(all.length, 80)
})

// A consumer with readUncommitted false, started while a transaction is open,
// sees nothing of it until the commit, then all of it.
kafkaTest('read_committed consumer waits for the open transaction', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-txn-open')
  await createTopics(admin, [topic], 1)

  const producer = kafka.producer({ transactionalId: uniq('js-txn-open-id'), idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  defer(() => producer.disconnect())

  const got = []
  const consumer = kafka.consumer({ groupId: uniq('js-txn-open-reader'), readUncommitted: false, maxWaitTimeInMs: 200 })
  await consumer.connect()
  defer(() => consumer.disconnect())
  await consumer.subscribe({ topic, fromBeginning: true })
  let fetched = 0
  consumer.on(consumer.events.FETCH, () => { fetched++ })
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()) } })

  const txn = await producer.transaction()
  await txn.send({ topic, messages: Array.from({ length: 10 }, (_, i) => ({ value: `v${i}` })) })
  // kafkajs lists offsets read_committed: the end is the last stable offset,
  // still 0 while the transaction is open.
  const [{ high }] = await admin.fetchTopicOffsets(topic)
  assert.equal(high, '0', 'last stable offset with the transaction open')
  // Several fetches go by with the transaction open: nothing is delivered.
  const before = fetched
  await eventually('five fetches with the transaction open', () => fetched >= before + 5)
  assert.deepEqual(got, [], 'read_committed consumer saw uncommitted messages')
  await txn.commit()
  await eventually(`10 committed messages (got ${got.length})`, () => got.length >= 10)
  assert.deepEqual(got, Array.from({ length: 10 }, (_, i) => `v${i}`))
  const [after] = await admin.fetchTopicOffsets(topic)
  assert.equal(after.high, '11', 'last stable offset after the commit: 10 messages and the marker')
})

// A second producer with the same transactionalId fences the first: connecting
// it aborts the first's open transaction; the first's later send and commit fail
// with a fencing error, and only the second's messages are visible.
kafkaTest('transactions: a new instance fences the old one', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-txn-fence')
  const transactionalId = uniq('js-txn-fence-id')
  await createTopics(admin, [topic], 1)

  const first = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, retry: { retries: 2 } })
  await first.connect()
  defer(() => first.disconnect())
  const txn = await first.transaction()
  await txn.send({ topic, messages: [{ value: 'first-0' }, { value: 'first-1' }] })

  const second = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 })
  await second.connect()
  defer(() => second.disconnect())
  const txn2 = await second.transaction()
  await txn2.send({ topic, messages: [{ value: 'second' }] })
  await txn2.commit()

  const fenced = /INVALID_PRODUCER_EPOCH|PRODUCER_FENCED|epoch|fenced/i
  await assert.rejects(txn.send({ topic, messages: [{ value: 'first-late' }] }), (err) => {
    assert.match(`${err.type} ${err.message}`, fenced)
    return true
  })
  await assert.rejects(txn.commit(), (err) => {
    assert.match(`${err.type} ${err.message}`, fenced)
    return true
  })

  const got = await readAll(kafka, topic, 1, { readUncommitted: false })
  assert.deepEqual(got.map((m) => m.value), ['second'])
  // first-0, first-1, the abort marker, second, the commit marker.
  const [{ high }] = await admin.fetchTopicOffsets(topic)
  assert.equal(high, '5')
})
