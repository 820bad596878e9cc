/**
 * `npm run openapi`: writes the OpenAPI document the gateway serves to docs/openapi.json (the
 * committed contract clients generate from). It starts a throwaway gateway (test/support/stack.ts,
 * no supervisor) and saves what /docs/openapi.json answers; test/integration/openapi.test.ts fails
 * while the two differ.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, ROOT, startStack } from '../support/stack';

export const COMMITTED_DOCUMENT = join(ROOT, 'docs/openapi.json');

/** The document as committed: two-space JSON and a final newline. */
export function serialise(document: unknown): string {
  return `${JSON.stringify(document, null, 2)}\n`;
}

async function main(): Promise<void> {
  const stack = await startStack({ supervisors: 0 });
  try {
    const res = await api(stack, 'GET', '/docs/openapi.json');
    if (res.status !== 200) throw new Error(`/docs/openapi.json answered ${res.status}`);
    writeFileSync(COMMITTED_DOCUMENT, serialise(res.json));
    console.log(`wrote ${COMMITTED_DOCUMENT}`);
  } finally {
    await stack.stop();
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.stack : String(err));
    process.exit(1);
  });
}
