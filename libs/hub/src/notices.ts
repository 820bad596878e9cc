/**
 * What a person must know before weights land on their disk: gated repositories, and licences that
 * forbid the commercial use this service would otherwise make of them.
 */
import type { EngineSpec } from '@flexy/engines';

/** Plain-words summaries of licences that restrict use, keyed by engine. */
const PLAIN_WORDS: Partial<Record<string, string[]>> = {
  flux2_dev_4bit: [
    'FLUX.2 [dev] is NOT licensed for commercial use. Its weights come under the FLUX.2-dev',
    'Non-Commercial License from Black Forest Labs: you may download and run them for research,',
    'testing and personal projects; running them for a business, including generating images for',
    'paying users of a product such as PromptPics, needs a separate commercial licence from',
    'Black Forest Labs (https://bfl.ai/licensing). Accepting the licence on the hub binds your',
    'hub account to its terms; read the full text on the model page before you accept.',
  ],
  flux1_dev: [
    'FLUX.1 [dev] is NOT licensed for commercial use. Its weights come under the FLUX.1 [dev]',
    'Non-Commercial License from Black Forest Labs: research, testing and personal use only;',
    'commercial use needs a separate licence from Black Forest Labs (https://bfl.ai/licensing).',
  ],
};

export function licenseNotice(spec: EngineSpec): string[] {
  const lines = [`${spec.id}: licence: ${spec.license}`];
  const plain = PLAIN_WORDS[spec.id];
  if (plain) lines.push(...plain.map((l) => `  ${l}`));
  if (spec.gated) {
    lines.push(`  ${spec.hubRepo} is gated: its licence must be accepted on the hub by the account behind HF_TOKEN.`);
  }
  return lines;
}

export function repoPage(spec: EngineSpec, hubUrl: string): string {
  return `${hubUrl.replace(/\/+$/, '')}/${spec.hubRepo}`;
}

export function gatedSteps(spec: EngineSpec, hubUrl: string): string[] {
  const base = hubUrl.replace(/\/+$/, '');
  return [
    `  1. Sign in at ${base} and open ${repoPage(spec, hubUrl)}`,
    '  2. Read the licence and accept it (some repositories then wait for the owner to approve you)',
    `  3. Create a read token at ${base}/settings/tokens (a fine-grained token needs`,
    '     "Read access to contents of all public gated repos you can access")',
    `  4. Run again with the token in the environment: HF_TOKEN=hf_... npm run models -- pull ${spec.id}`,
  ];
}
