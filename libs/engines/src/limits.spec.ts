import { ENGINE_CATALOG } from './catalog';
import { catalogBounds, engineParamErrors, PROMPT_PATTERN, TEXT_PATTERN, textLength, WHITESPACE_CLASS } from './limits';

describe('the text rules as JSON Schema patterns', () => {
  it('spell out exactly the whitespace that trim() removes', () => {
    const ws = new RegExp(`^[${WHITESPACE_CLASS}]$`);
    const differ: string[] = [];
    for (let c = 0; c <= 0xffff; c++) {
      const ch = String.fromCharCode(c);
      if ((ch.trim() === '') !== ws.test(ch)) differ.push(c.toString(16));
    }
    expect(differ).toEqual([]);
  });

  it('agree with the limits check on empty, blank, NUL and ordinary prompts', () => {
    const prompt = new RegExp(PROMPT_PATTERN);
    const flux = ENGINE_CATALOG.flux1_dev;
    const refused = (text: string) => engineParamErrors(flux, { prompt: text, steps: 1, guidance: 1, width: 64, height: 64, num_images: 1, negative_prompt: null }).some((e) => e.field === 'prompt');
    for (const text of ['', ' ', '\t\n', '\u3000\ufeff', 'a\u0000b', '\u0000', 'a', '  a  ', '\u{1F600}', 'ünïcödé']) {
      expect({ text, schema: prompt.test(text) }).toEqual({ text, schema: !refused(text) });
    }
    expect(new RegExp(TEXT_PATTERN).test('')).toBe(true);
    expect(new RegExp(TEXT_PATTERN).test('a\u0000')).toBe(false);
  });

  it('count length in code points, as JSON Schema does', () => {
    expect(textLength('\u{1F600}\u{1F600}')).toBe(2);
    const max = ENGINE_CATALOG.realvis_xl.limits.maxPromptChars;
    const errors = (prompt: string) => engineParamErrors(ENGINE_CATALOG.realvis_xl, { prompt, steps: 1, guidance: 1, width: 64, height: 64, num_images: 1, negative_prompt: null });
    expect(errors('\u{1F600}'.repeat(max))).toEqual([]);
    expect(errors('\u{1F600}'.repeat(max + 1)).map((e) => e.field)).toEqual(['prompt']);
  });
});

it('catalogBounds is the loosest of the engines', () => {
  const b = catalogBounds();
  for (const spec of Object.values(ENGINE_CATALOG)) {
    expect(spec.limits.sizeMultiple % b.sizeMultiple).toBe(0);
    expect(spec.limits.minSide).toBeGreaterThanOrEqual(b.side.min);
    expect(spec.limits.maxSide).toBeLessThanOrEqual(b.side.max);
    expect(spec.limits.steps.max).toBeLessThanOrEqual(b.steps.max);
    expect(spec.limits.guidance.max).toBeLessThanOrEqual(b.guidance.max);
  }
  expect(b).toMatchObject({ sizeMultiple: 8, side: { min: 64, max: 4096 } });
});

it('an absent side never breaks the pixel budget: each default fits against the other side at its maximum', () => {
  // The API checks the budget on width; a request that leaves width out relies on this.
  for (const spec of Object.values(ENGINE_CATALOG)) {
    expect(spec.defaults.width * spec.limits.maxSide).toBeLessThanOrEqual(spec.limits.maxPixels);
    expect(spec.defaults.height * spec.limits.maxSide).toBeLessThanOrEqual(spec.limits.maxPixels);
  }
});
