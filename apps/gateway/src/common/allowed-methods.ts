import type { Express } from 'express';

interface RouteLayer {
  route?: { methods: Record<string, boolean> };
  matchers: Array<(path: string) => unknown>;
}

/**
 * The methods the gateway's routes answer for a path, from Express's own route table and matchers
 * (so the answer is what routing does, not a second list): HEAD with GET, OPTIONS always. Empty
 * when no route has this path.
 */
export function allowedMethods(app: Express, path: string): string[] {
  const stack = (app as unknown as { router: { stack: RouteLayer[] } }).router.stack;
  const methods = new Set<string>();
  for (const layer of stack) {
    if (!layer.route || !layer.matchers.some((match) => match(path))) continue;
    for (const [method, on] of Object.entries(layer.route.methods)) if (on && method !== '_all') methods.add(method.toUpperCase());
  }
  if (methods.size === 0) return [];
  if (methods.has('GET')) methods.add('HEAD');
  methods.add('OPTIONS');
  return [...methods].sort();
}
