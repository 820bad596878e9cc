import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENGINE_CATALOG, ENGINE_IDS } from './catalog';
import { engineParamErrors } from './limits';

describe('engine catalog', () => {
  it('is what the Python worker reads: engine-catalog.json is generated from it and up to date', () => {
    const json = JSON.parse(readFileSync(join(__dirname, '../engine-catalog.json'), 'utf8'));
    expect(json.engines).toEqual(JSON.parse(JSON.stringify(ENGINE_CATALOG)));
  });

  it.each(ENGINE_IDS)('%s: its own defaults pass its own limits', (id) => {
    const spec = ENGINE_CATALOG[id];
    expect(engineParamErrors(spec, { prompt: 'x', negative_prompt: null, num_images: 1, ...spec.defaults })).toEqual([]);
  });
});

describe('engineParamErrors', () => {
  const flux1 = ENGINE_CATALOG.flux1_dev;
  const base = { prompt: 'x', negative_prompt: null as string | null, num_images: 1, ...flux1.defaults };

  it('names each offending field', () => {
    const fields = (p: Partial<typeof base> & { referenceCount?: number }) =>
      engineParamErrors(flux1, { ...base, ...p }).map((e) => e.field);
    expect(fields({ width: 1000 })).toEqual(['width']);
    expect(fields({ width: 2048, height: 2048 })).toEqual(['width']);
    expect(fields({ steps: 0 })).toEqual(['steps']);
    expect(fields({ guidance: 10.5 })).toEqual(['guidance']);
    expect(fields({ prompt: ' ' })).toEqual(['prompt']);
    expect(fields({ negative_prompt: 'no' })).toEqual(['negative_prompt']);
    expect(fields({ prompt: 'a \ud800 b' })).toEqual(['prompt']);
    expect(fields({ prompt: 'nul \u0000' })).toEqual(['prompt']);
    expect(fields({ referenceCount: 1 })).toEqual(['references']);
    expect(fields({ num_images: 5 })).toEqual(['num_images']);
  });

  it('allows FLUX.2 up to 4 MP and ten references, SDXL multiples of 8', () => {
    const flux2 = ENGINE_CATALOG.flux2_dev_4bit;
    expect(engineParamErrors(flux2, { ...base, ...flux2.defaults, width: 2048, height: 2048, referenceCount: 10 })).toEqual([]);
    expect(engineParamErrors(flux2, { ...base, ...flux2.defaults, referenceCount: 11 }).map((e) => e.field)).toEqual(['references']);
    const sdxl = ENGINE_CATALOG.realvis_xl;
    expect(engineParamErrors(sdxl, { ...base, ...sdxl.defaults, width: 1016 })).toEqual([]);
  });
});
