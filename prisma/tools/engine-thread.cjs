// @ts-check
// Worker-thread entry: runs one schema-engine operation from db-core.cjs and posts the outcome.
// libs/persistence runs the engine here so its WebAssembly memory (which never shrinks) and its
// database connections go away with the thread once the operation is done.
'use strict';

const { parentPort, workerData } = require('node:worker_threads');
const core = require('./db-core.cjs');

const { op, args } = workerData;
/** @type {Record<string, (...a: any[]) => Promise<unknown>>} */
const operations = core.operations;
Promise.resolve()
  .then(() => {
    if (!Object.hasOwn(operations, op)) throw new Error(`unknown schema-engine operation "${op}"`);
    return operations[op](...args);
  })
  .then(
    (value) => parentPort?.postMessage({ ok: true, value }),
    (error) => parentPort?.postMessage({ ok: false, message: String(error?.message ?? error), code: error?.code }),
  );
