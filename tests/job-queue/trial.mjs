// A BullMQ job queue through a replica's RESP port (tests/job-queue.sh).
//
//   node trial.mjs PORT SECONDS
//
// Enqueues jobs for SECONDS with fixed ids (an add retried after an error
// is then idempotent), while a Worker of concurrency 4 on the same port
// processes them; records every add that was acknowledged and every job
// the worker ran, waits up to 90 s for the queue to drain, and compares.
// (A job moved to the worker whose reply was lost with the killed replica
// is run once BullMQ's stalled-job check finds its lock expired: 30 s of
// lock and up to 30 s to the next check, as after any lost connection.)
// Exits 0 only if every acknowledged job was processed. A job run more than
// once is reported, not failed: BullMQ promises at least once (a job whose
// lock lapses is run again).
import { Queue, Worker } from 'bullmq';

const port = Number(process.argv[2] || 6382);
const seconds = Number(process.argv[3] || 60);
const connection = {
  host: '127.0.0.1',
  port,
  maxRetriesPerRequest: null,
  enableOfflineQueue: true,
};
const name = 'trial-' + Date.now();
const queue = new Queue(name, { connection });
const acked = new Set();
const runs = new Map();
let addErrors = 0;
let workerErrors = 0;
const t0 = Date.now();
const log = (m) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)}s ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const worker = new Worker(
  name,
  async (job) => {
    runs.set(job.id, (runs.get(job.id) || 0) + 1);
    return job.data.n * 2;
  },
  { connection, concurrency: 4 },
);
worker.on('error', (e) => {
  workerErrors++;
  if (workerErrors <= 20) log(`worker error: ${e.message}`);
});

let n = 0;
let lastReport = Date.now();
while (Date.now() - t0 < seconds * 1000) {
  const id = `job-${n}`;
  try {
    // Bounded: with no active the client would wait for ever; an add that
    // timed out is of unknown outcome, not acknowledged, and is sent again
    // with the same id.
    await Promise.race([
      queue.add('work', { n }, { jobId: id, removeOnComplete: false }),
      sleep(10000).then(() => {
        throw new Error('no answer within 10 s');
      }),
    ]);
    acked.add(id);
    n++;
  } catch (e) {
    addErrors++;
    if (addErrors <= 20) log(`add ${id} failed (retried): ${e.message}`);
    await sleep(50);
  }
  if (Date.now() - lastReport > 5000) {
    lastReport = Date.now();
    log(`acknowledged ${acked.size}, processed ${runs.size}`);
  }
}
log(`enqueueing stopped: ${acked.size} acknowledged adds`);
const missingNow = () => [...acked].filter((id) => !runs.has(id));
const deadline = Date.now() + 90000;
while (Date.now() < deadline && missingNow().length > 0) await sleep(200);

const missing = missingNow();
const twice = [...runs].filter(([, k]) => k > 1).map(([id]) => id);
const counts = await queue.getJobCounts('wait', 'active', 'completed', 'failed', 'delayed');
log(
  `acknowledged ${acked.size}, processed ${runs.size} distinct, ` +
    `missing ${missing.length}, processed more than once ${twice.length}, ` +
    `add errors ${addErrors}, worker errors ${workerErrors}, queue ${JSON.stringify(counts)}`,
);
if (missing.length) log(`missing: ${missing.slice(0, 20).join(' ')}`);
if (twice.length) log(`more than once: ${twice.slice(0, 20).join(' ')}`);
await worker.close();
await queue.close();
process.exit(missing.length ? 1 : 0);
