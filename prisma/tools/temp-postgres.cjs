// @ts-check
// A throwaway PostgreSQL cluster in a temporary folder, from the server binaries installed on
// this machine. Used to author PostgreSQL migrations (as the shadow database server) and by the
// persistence tests. PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { execFile, execFileSync } = require('node:child_process');
const { promisify } = require('node:util');

const run = promisify(execFile);

/** The folder holding initdb/pg_ctl, or a reason there is none. @returns {{ binDir: string } | { reason: string }} */
function findPostgres(env = process.env) {
  const candidates = [];
  if (env.PG_BIN) candidates.push(env.PG_BIN);
  try {
    candidates.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    // pg_config is not always on PATH; the Debian layout below covers the usual install.
  }
  const debian = '/usr/lib/postgresql';
  if (fs.existsSync(debian)) {
    const versions = fs.readdirSync(debian).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((v) => path.join(debian, v, 'bin')));
  }
  const binDir = candidates.find((dir) => fs.existsSync(path.join(dir, 'initdb')) && fs.existsSync(path.join(dir, 'pg_ctl')));
  if (binDir) return { binDir };
  return { reason: 'no PostgreSQL server binaries found (set PG_BIN to the folder holding initdb and pg_ctl)' };
}

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts a private cluster listening on 127.0.0.1 with trust auth. Durability is switched off:
 * the data lives only as long as the caller needs it.
 * @returns {Promise<{ url: string, dataDir: string, stop(): Promise<void> }>}
 */
async function startTemporaryPostgres(env = process.env) {
  const found = findPostgres(env);
  if ('reason' in found) throw new Error(found.reason);
  const initdb = path.join(found.binDir, 'initdb');
  const pgCtl = path.join(found.binDir, 'pg_ctl');

  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'flexy-pg-'));
  const dataDir = path.join(root, 'data');
  /** @type {(cmd: string, args: string[]) => Promise<unknown>} */
  let exec = (cmd, args) => run(cmd, args, { cwd: root });
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    fs.chownSync(root, uid, gid);
    exec = (cmd, args) => run('runuser', ['-u', 'postgres', '--', cmd, ...args], { cwd: root });
  }

  const port = await freePort();
  try {
    await exec(initdb, ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
    const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
    await exec(pgCtl, ['-D', dataDir, '-o', options, '-l', path.join(root, 'server.log'), '-w', '-t', '60', 'start']);
  } catch (error) {
    const log = path.join(root, 'server.log');
    const detail = fs.existsSync(log) ? `\n${fs.readFileSync(log, 'utf8').slice(-2000)}` : '';
    fs.rmSync(root, { recursive: true, force: true });
    throw new Error(`could not start a temporary PostgreSQL: ${/** @type {Error} */ (error).message}${detail}`);
  }

  let stopped = false;
  return {
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    dataDir,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await exec(pgCtl, ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
      } finally {
        fs.rmSync(root, { recursive: true, force: true });
      }
    },
  };
}

module.exports = { findPostgres, startTemporaryPostgres };
