/** The PromptPics app's two requests, exactly as the brief gives them (shared/brief). */

export const BRIEF_GENERATE = {
  prompt: "ultra realistic portrait of a corgi astronaut with legible mission patch text 'PROMPTPICS', studio lighting",
  engine: 'flux2_dev_4bit',
  seed: 42,
  steps: 24,
  guidance: 4.0,
  width: 768,
  height: 768,
};

export const BRIEF_NERD_SANDBOX = {
  prompt: "infographic-style poster that says 'PROMPTPICS PRESENTS' in big text, plus a realistic photo panel and a cartoon panel",
  seed: 123,
  steps: 24,
  guidance: 4.0,
  width: 768,
  height: 768,
};
