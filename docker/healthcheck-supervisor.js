// Container health for the worker image: the supervisor is alive and has at least one Python worker
// process. The supervisor has no HTTP surface, so /proc is the witness. Arguments are matched one by
// one, so a shell whose script merely mentions these names does not count.
'use strict';
const { readdirSync, readFileSync } = require('node:fs');
const { basename } = require('node:path');

let supervisor = false;
let worker = false;
for (const pid of readdirSync('/proc')) {
  if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
  let argv;
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    continue;
  }
  const program = basename(argv[0] || '');
  if (program === 'node' && argv.slice(1).some((a) => a.endsWith('apps/supervisor/src/main.js'))) supervisor = true;
  if (/^python[\d.]*$/.test(program) && argv[1] === '-m' && argv[2] === 'flexy_worker') worker = true;
}
if (!supervisor) console.log('supervisor process not found');
else if (!worker) console.log('supervisor has no Python worker running');
process.exit(supervisor && worker ? 0 : 1);
