import type { EngineId } from '@flexy/engines';
import type { Generation } from '@flexy/persistence';
import type { GenerationsService } from '../../generations/generations.service';

/**
 * Runs a finished generation again: a new generation with the same parameters (seed included) and
 * origin (so the same priority). The old record keeps its outcome, since results are never
 * overwritten, and stays the member of its sandbox run or batch.
 */
export function resubmit(generations: GenerationsService, g: Generation) {
  return generations.create(
    {
      prompt: g.prompt,
      engine: g.engine as EngineId,
      negative_prompt: g.negativePrompt ?? undefined,
      seed: Number(g.seed),
      steps: g.steps,
      guidance: g.guidance,
      width: g.width,
      height: g.height,
      num_images: g.numImages,
    },
    { origin: g.origin },
  );
}
