import assert from 'node:assert/strict'
import kafkajs from 'kafkajs'
import { kafkaTest, makeKafka, uniq, createTopics, readAll } from '../helpers.mjs'

const { CompressionTypes } = kafkajs

// An idempotent producer with acks -1 writes keyed messages to a four-partition
// topic in twenty sends; a consumer reads every message exactly once,
// at the offset the producer was told, in send order per key.
kafkaTest('idempotent producer, acks -1: every message back once, in order', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const topic = uniq('js-idem')
  await createTopics(admin, [topic], 4)

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 5 })
  await producer.connect()
  defer(() => producer.disconnect())

  const n = 2000
  const sends = []
  for (let chunk = 0; chunk < 20; chunk++) {
    const messages = []
    for (let i = chunk * 100; i < (chunk + 1) * 100; i++) {
      messages.push({ key: `k${i % 16}`, value: String(i) })
    }
    // One send after another: the order of messages of a key across sends is
    // then the send order.
    sends.push(producer.send({ topic, acks: -1, messages }))
    await sends[sends.length - 1]
  }
  const results = (await Promise.all(sends)).flat()
  for (const r of results) {
    assert.equal(r.errorCode, 0, `produce error ${r.errorCode} on ${r.partition}`)
  }

  const offsets = await admin.fetchTopicOffsets(topic)
  const total = offsets.reduce((sum, p) => sum + Number(p.high), 0)
  assert.equal(total, n, `high watermarks ${JSON.stringify(offsets)} sum to ${total}, want ${n}`)
  assert.ok(offsets.filter((p) => Number(p.high) > 0).length >= 3, 'messages spread over >= 3 partitions')

  const got = await readAll(kafka, topic, n)
  assert.equal(got.length, n)
  const seen = new Set()
  const nextOffset = new Map()
  const lastOfKey = new Map()
  for (const m of got) {
    assert.ok(!seen.has(m.value), `message ${m.value} consumed twice`)
    seen.add(m.value)
    assert.equal(m.offset, nextOffset.get(m.partition) || 0, `partition ${m.partition}: offset ${m.offset} out of sequence`)
    nextOffset.set(m.partition, m.offset + 1)
    const i = Number(m.value)
    assert.equal(m.key, `k${i % 16}`)
    if (lastOfKey.has(m.key)) assert.ok(lastOfKey.get(m.key) < i, `key ${m.key}: ${i} after ${lastOfKey.get(m.key)}`)
    lastOfKey.set(m.key, i)
  }
  assert.equal(seen.size, n)
})

// Messages of several topics in one sendBatch, with headers and a compressed
// (gzip: the codec kafkajs ships) batch.
kafkaTest('sendBatch to two topics with headers and gzip', async (t, defer) => {
  const kafka = makeKafka()
  const admin = kafka.admin()
  await admin.connect()
  defer(() => admin.disconnect())
  const a = uniq('js-batch-a')
  const b = uniq('js-batch-b')
  await createTopics(admin, [a, b], 2)

  const producer = kafka.producer({ idempotent: true })
  const produceRequests = []
  producer.on(producer.events.REQUEST, ({ payload }) => {
    if (payload.apiName === 'Produce') produceRequests.push(payload)
  })
  await producer.connect()
  defer(() => producer.disconnect())
  const filler = 'a compressible payload '.repeat(20)
  const mk = (topic, n) => Array.from({ length: n }, (_, i) => ({ key: String(i), value: `${topic}:${i}:${filler}`, headers: { i: String(i), src: 'kafkajs' } }))
  const res = await producer.sendBatch({
    acks: -1,
    compression: CompressionTypes.GZIP,
    topicMessages: [{ topic: a, messages: mk(a, 50) }, { topic: b, messages: mk(b, 30) }],
  })
  assert.deepEqual(new Set(res.map((r) => r.topicName)), new Set([a, b]))
  // 80 values of ~470 bytes: about 37 kB uncompressed; gzip makes the requests far smaller.
  const sent = produceRequests.reduce((sum, r) => sum + r.size, 0)
  assert.ok(sent > 0 && sent < 10000, `produce requests carried ${sent} bytes: not compressed`)

  for (const [topic, n] of [[a, 50], [b, 30]]) {
    const consumer = kafka.consumer({ groupId: uniq('js-batch-reader'), maxWaitTimeInMs: 200 })
    await consumer.connect()
    defer(() => consumer.disconnect())
    await consumer.subscribe({ topic, fromBeginning: true })
    const got = []
    await consumer.run({ eachMessage: async ({ message }) => { got.push(message) } })
    const deadline = Date.now() + 20000
    while (got.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.equal(got.length, n, `${topic}: ${got.length} of ${n} messages`)
    for (const m of got) {
      const i = m.key.toString()
      assert.equal(m.value.toString(), `${topic}:${i}:${filler}`)
      assert.equal(m.headers.i.toString(), i)
      assert.equal(m.headers.src.toString(), 'kafkajs')
    }
  }
})
