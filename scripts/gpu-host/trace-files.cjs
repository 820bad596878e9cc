// Loaded with `node --require` by scripts/gpu-host.sh while the GPU tier runs in its reduced mode on
// this machine: records every file a Node process of the stack requires or reads (modules, native
// addons, wasm, migrations), so the carried bundle holds those files and nothing else.
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');

const out = process.env.FLEXY_TRACE_FILE;
if (out) {
  const seen = new Set();
  const note = (p) => {
    if (typeof p === 'string' && path.isAbsolute(p)) seen.add(p);
    else if (p instanceof URL && p.protocol === 'file:') seen.add(p.pathname);
  };
  for (const name of ['readFileSync', 'readFile', 'openSync', 'open', 'createReadStream', 'readdirSync']) {
    const original = fs[name];
    fs[name] = function traced(p, ...rest) {
      note(p);
      return original.call(this, p, ...rest);
    };
  }
  for (const name of ['readFile', 'open', 'readdir']) {
    const original = fs.promises[name];
    fs.promises[name] = function traced(p, ...rest) {
      note(p);
      return original.call(this, p, ...rest);
    };
  }
  const threads = require('node:worker_threads');
  const Worker = threads.Worker;
  threads.Worker = class TracedWorker extends Worker {
    constructor(filename, options) {
      note(filename);
      super(filename, options);
    }
  };
  const dlopen = process.dlopen;
  process.dlopen = function traced(module, filename, ...rest) {
    note(filename);
    return dlopen.call(this, module, filename, ...rest);
  };
  const flush = () => {
    for (const key of Object.keys(Module._cache)) seen.add(key);
    try {
      fs.writeFileSync(`${out}.${process.pid}`, [...seen].join('\n') + '\n');
    } catch {
      // the folder is gone: the run is over
    }
  };
  setInterval(flush, 2000).unref();
  process.on('exit', flush);
}
