/**
 * The API contract, machine-checked: Schemathesis runs every check over every operation of the
 * service's own OpenAPI document, in the examples, coverage, fuzzing and stateful phases, against a
 * throwaway stack, and must find nothing. Bounded to a few minutes (the `suite` profile of
 * run-contract.ts, which starts the stack from test/support/stack.ts in a network namespace of its
 * own); `npm run test:contract` is the longer run.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../support/stack';

jest.setTimeout(12 * 60_000);

it('the service answers as its OpenAPI document says: Schemathesis with every check finds nothing', async () => {
  const logs = join(ROOT, 'test-artifacts/contract');
  mkdirSync(logs, { recursive: true });
  const log = createWriteStream(join(logs, `suite-${Date.now()}.log`));
  const output: string[] = [];
  const child = spawn(process.execPath, [join(ROOT, 'dist/test/contract/run-contract.js'), '--profile', 'suite'], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (chunk: Buffer) => {
      log.write(chunk);
      output.push(chunk.toString());
    });
  }
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  log.end();
  const text = output.join('');
  // Every phase ran, and Schemathesis summed up with no failure and no error.
  const summary = text.slice(text.lastIndexOf('SUMMARY'));
  expect({ code, summary }).toEqual({ code: 0, summary: expect.stringMatching(/Test Phases:[\s\S]*Examples[\s\S]*Coverage[\s\S]*Fuzzing[\s\S]*Stateful/) });
  expect(summary).not.toMatch(/Failures:|Errors:/);
});
