import { ENGINE_CATALOG } from '@flexy/engines';
import { isAllowed, matchesPattern } from './patterns';

describe('allow patterns (fnmatch semantics, as the hub clients use them)', () => {
  it.each([
    ['model_index.json', 'model_index.json', true],
    ['transformer/config.json', '*/config.json', true],
    ['config.json', '*/config.json', false],
    ['transformer/diffusion_pytorch_model-00001-of-00003.safetensors', '*/*.safetensors', true],
    ['flux1-dev.safetensors', '*/*.safetensors', false],
    // `*` crosses folders, as in Python's fnmatch.
    ['text_encoder_2/sub/model.safetensors', '*/*.safetensors', true],
    ['tokenizer_2/spiece.model', 'tokenizer*/*', true],
    ['unet/diffusion_pytorch_model.fp16.safetensors', '*/*.fp16.safetensors', true],
    ['unet/diffusion_pytorch_model.safetensors', '*/*.fp16.safetensors', false],
    ['vae/a.bin', 'vae/', true],
    ['file1.txt', 'file[0-9].txt', true],
    ['fileA.txt', 'file[!0-9].txt', true],
    ['file1.txt', 'file[!0-9].txt', false],
    ['a.json', '?.json', true],
    ['model_indexXjson', 'model_index.json', false],
  ])('%s against %s is %s', (path, pattern, expected) => {
    expect(matchesPattern(path, pattern)).toBe(expected);
  });

  it('selects the diffusers folders of the catalog and leaves out single-file checkpoints and docs', () => {
    const flux = ENGINE_CATALOG.flux1_dev.allowPatterns;
    expect(isAllowed('transformer/diffusion_pytorch_model.safetensors.index.json', flux)).toBe(true);
    expect(isAllowed('scheduler/scheduler_config.json', flux)).toBe(true);
    expect(isAllowed('flux1-dev.safetensors', flux)).toBe(false);
    expect(isAllowed('README.md', flux)).toBe(false);
    expect(isAllowed('.gitattributes', flux)).toBe(false);
    const realvis = ENGINE_CATALOG.realvis_xl.allowPatterns;
    expect(isAllowed('unet/diffusion_pytorch_model.safetensors', realvis)).toBe(false);
    expect(isAllowed('unet/diffusion_pytorch_model.fp16.safetensors', realvis)).toBe(true);
  });
});
