import { InvalidJobPayloadError, parseGenerateJob } from './parse-job';

const good = {
  generationId: 'gen_1',
  engine: 'sd3_medium',
  prompt: 'a cat',
  negativePrompt: 'blurry',
  seed: 1,
  steps: 20,
  guidance: 7,
  width: 512,
  height: 512,
  numImages: 1,
  origin: 'interactive',
  references: [],
  apiKeyId: null,
  webhookUrl: null,
  sandboxRunId: null,
  batchId: null,
  acceptedAt: 1,
};

describe('parseGenerateJob (payloads read back from Redis)', () => {
  it('accepts a well-formed payload', () => {
    expect(parseGenerateJob(good)).toEqual(good);
  });

  it.each([
    ['unknown engine', { engine: 'nope' }, /engine/],
    ['engine limits', { width: 500 }, /width/],
    ['seed beyond 32 bits', { seed: 2 ** 32 }, /seed/],
    ['wrong type', { steps: '20' }, /steps/],
    ['unknown origin', { origin: 'vip' }, /origin/],
    ['references on an engine without them', { references: ['ab/x.png'] }, /references/],
    ['a reference path that escapes the store', { engine: 'flux2_dev_4bit', negativePrompt: null, guidance: 4, references: ['../etc/passwd'] }, /references/],
  ])('refuses %s', (_n, patch, message) => {
    expect(() => parseGenerateJob({ ...good, ...patch })).toThrow(InvalidJobPayloadError);
    expect(() => parseGenerateJob({ ...good, ...patch })).toThrow(message);
  });

  it('refuses null', () => {
    expect(() => parseGenerateJob(null)).toThrow(InvalidJobPayloadError);
  });
});
