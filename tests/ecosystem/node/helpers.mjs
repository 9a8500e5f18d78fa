// Shared pieces of the kafkajs tests: the client on the broker that ../go-node.sh
// started (STRAND_BOOTSTRAP), unique names, polling with deadlines, and a log
// that is printed only when a test fails (KAFKAJS_LOG=debug for every request;
// KAFKAJS_LOG_FILE=path also appends every line to that file).
import { randomBytes } from 'node:crypto'
import { appendFileSync } from 'node:fs'
import { test } from 'node:test'
import { Kafka, logLevel } from 'kafkajs'

export const brokers = (process.env.STRAND_BOOTSTRAP || '127.0.0.1:23010').split(',')

export function uniq(prefix) {
  return `${prefix}-${randomBytes(5).toString('hex')}`
}

const levels = { nothing: logLevel.NOTHING, error: logLevel.ERROR, warn: logLevel.WARN, info: logLevel.INFO, debug: logLevel.DEBUG }
const logLines = []

export function clientLog() {
  return logLines.join('\n')
}

export function makeKafka(clientId = 'strand-kafkajs') {
  return new Kafka({
    clientId,
    brokers,
    connectionTimeout: 3000,
    logLevel: levels[process.env.KAFKAJS_LOG || 'info'] ?? logLevel.INFO,
    logCreator: () => ({ namespace, level, label, log }) => {
      const { message, ...extra } = log
      let details
      try {
        details = JSON.stringify(extra, (_, v) => (typeof v === 'bigint' ? v.toString() : v))
      } catch (err) {
        details = `(unprintable: ${err.message})`
      }
      const line = `${new Date().toISOString()} ${label} [${namespace}] ${message} ${details}`
      if (logLines.length < 20000) logLines.push(line)
      if (process.env.KAFKAJS_LOG_FILE) appendFileSync(process.env.KAFKAJS_LOG_FILE, line + '\n')
    },
  })
}

// Defines a test whose body gets `defer(fn)` to register cleanups (run after the
// body, in reverse order, whatever happened). When the body fails, the client log
// collected during the test is printed to stderr. opts are node:test's (skip, timeout).
export function kafkaTest(name, opts, body) {
  if (typeof opts === 'function') { body = opts; opts = {} }
  test(name, { timeout: 90000, ...opts }, async (t) => {
    logLines.length = 0
    const closers = []
    const defer = (fn) => closers.push(fn)
    try {
      await body(t, defer)
    } catch (err) {
      process.stderr.write(`--- client log of ${name} ---\n${clientLog()}\n`)
      throw err
    } finally {
      while (closers.length) {
        const close = closers.pop()
        try { await close() } catch (_) { /* best effort */ }
      }
    }
  })
}

export async function eventually(what, cond, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

// Creates topics (replication factor 1) and checks that they were created.
export async function createTopics(admin, topics, numPartitions) {
  const created = await admin.createTopics({
    waitForLeaders: true,
    topics: topics.map((topic) => ({ topic, numPartitions, replicationFactor: 1 })),
  })
  if (!created) throw new Error(`createTopics(${topics}) answered false: topics already existed`)
}

// Reads a topic from the beginning with a fresh group until `want` messages
// arrived (or the deadline passes); returns them in arrival order.
export async function readAll(kafka, topic, want, { readUncommitted = true, timeoutMs = 30000 } = {}) {
  const consumer = kafka.consumer({ groupId: uniq('reader'), readUncommitted, maxWaitTimeInMs: 200 })
  const out = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        out.push({ partition, offset: Number(message.offset), key: message.key?.toString(), value: message.value?.toString() })
      },
    })
    await eventually(`${want} messages from ${topic} (got ${out.length})`, () => out.length >= want, timeoutMs)
  } finally {
    await consumer.disconnect()
  }
  return out
}

