import { InvalidJobPayloadError, parseGenerateJob } from './parse-job';

const params = { prompt: 'a cat', negative_prompt: 'blurry', seed: 1, steps: 20, guidance: 7, width: 512, height: 512, num_images: 1 };
const good = {
  generationId: 'gen_1',
  engine: 'sd3_medium',
  params,
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
    ['engine limits', { params: { ...params, width: 500 } }, /width/],
    ['seed beyond 32 bits', { params: { ...params, seed: 2 ** 32 } }, /seed/],
    ['wrong type', { params: { ...params, steps: '20' } }, /steps/],
    ['a lone surrogate in the prompt', { params: { ...params, prompt: 'a \ud800 cat' } }, /prompt/],
    ['no params', { params: undefined }, /params/],
    ['unknown origin', { origin: 'vip' }, /origin/],
    ['a group id that is not a string', { batchId: 7 }, /batchId/],
    ['references on an engine without them', { references: ['ab/x.png'] }, /references/],
    ['a reference path that escapes the store', { engine: 'flux2_dev_4bit', params: { ...params, negative_prompt: null, guidance: 4 }, references: ['../etc/passwd'] }, /references/],
  ])('refuses %s', (_n, patch, message) => {
    expect(() => parseGenerateJob({ ...good, ...patch })).toThrow(InvalidJobPayloadError);
    expect(() => parseGenerateJob({ ...good, ...patch })).toThrow(message);
  });

  it('refuses null', () => {
    expect(() => parseGenerateJob(null)).toThrow(InvalidJobPayloadError);
  });
});
