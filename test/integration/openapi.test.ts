import 'reflect-metadata';
import { METHOD_METADATA, PATH_METADATA } from '@nestjs/common/constants';
import { RequestMethod } from '@nestjs/common';
import Ajv from 'ajv';
import { GatewayModule } from '../../apps/gateway/src/gateway.module';
import { api, startStack, type Stack } from '../support/stack';

jest.setTimeout(120_000);

let stack: Stack;
let spec: any;
beforeAll(async () => {
  stack = await startStack({ supervisors: 0 });
  const res = await api(stack, 'GET', '/docs/openapi.json');
  expect(res.status).toBe(200);
  spec = res.json;
});
afterAll(async () => {
  await stack?.stop();
});

/** Every route the gateway's controllers declare, as "METHOD /path/{param}", from Nest's own metadata. */
function declaredRoutes(): string[] {
  const routes: string[] = [];
  for (const controller of Reflect.getMetadata('controllers', GatewayModule) as Array<new (...a: never[]) => unknown>) {
    if (Reflect.getMetadata('swagger/apiExcludeController', controller)) continue;
    const base = String(Reflect.getMetadata(PATH_METADATA, controller) ?? '');
    for (const name of Object.getOwnPropertyNames(controller.prototype)) {
      if (name === 'constructor') continue;
      const handler = controller.prototype[name];
      const path = Reflect.getMetadata(PATH_METADATA, handler);
      if (path === undefined || typeof handler !== 'function') continue;
      if (Reflect.getMetadata('swagger/apiExcludeEndpoint', handler)?.disable) continue;
      const method = RequestMethod[Reflect.getMetadata(METHOD_METADATA, handler) as number];
      const full = `/${[base, String(path)].filter((p) => p && p !== '/').join('/')}`.replace(/:(\w+)/g, '{$1}');
      routes.push(`${method} ${full}`);
    }
  }
  return routes;
}

function bodySchemaValidator(method: string, path: string) {
  const ref = spec.paths[path][method.toLowerCase()].requestBody.content['application/json'].schema.$ref as string;
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema({ $id: 'openapi', components: spec.components }, 'openapi');
  return ajv.compile({ $ref: `openapi${ref}` });
}

it('documents every route the controllers declare', () => {
  const documented = new Set(Object.entries(spec.paths).flatMap(([path, ops]) => Object.keys(ops as object).map((m) => `${m.toUpperCase()} ${path}`)));
  const routes = declaredRoutes();
  expect(routes.length).toBeGreaterThanOrEqual(15);
  expect(routes.filter((r) => !documented.has(r))).toEqual([]);
});

/** [route, a body the route accepts] — the spec's schema must accept each as well. */
const accepted: Array<[string, string, Record<string, unknown>]> = [
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev' }],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'sd3_medium', seed: 1, steps: 20, guidance: 7, width: 512, height: 768, negative_prompt: 'b', num_images: 2, webhook_url: 'http://93.184.215.14/x' }],
  ['POST', '/v1/sandbox-runs', { prompt: 'a', seed: 123, steps: 2, guidance: 4.0, width: 64, height: 64, engines: ['flux1_dev'] }],
  ['POST', '/v1/batches', { prompts: ['a', 'b'], engines: ['realvis_xl'], seeds: [1], steps: 1, width: 64, height: 64 }],
];

it.each(accepted)('%s %s: the schema accepts what the route accepts', async (method, path, body) => {
  const validate = bodySchemaValidator(method, path);
  expect(validate(body)).toBe(true);
  const res = await api(stack, method, path, body);
  expect(res.status).toBe(202);
});

it('the schema requires what the route requires', async () => {
  const validate = bodySchemaValidator('POST', '/v1/generations');
  const missingEngine = { prompt: 'a' };
  expect(validate(missingEngine)).toBe(false);
  expect((await api(stack, 'POST', '/v1/generations', missingEngine)).status).toBe(400);
  const wrongEngine = { prompt: 'a', engine: 'nope' };
  expect(validate(wrongEngine)).toBe(false);
  expect((await api(stack, 'POST', '/v1/generations', wrongEngine)).status).toBe(400);
});

it('the PromptPics requests of the brief match the documented schemas', () => {
  const generate = bodySchemaValidator('POST', '/generate');
  expect(generate({ prompt: 'x', engine: 'flux2_dev_4bit', seed: 42, steps: 24, guidance: 4.0, width: 768, height: 768 })).toBe(true);
  const sandbox = bodySchemaValidator('POST', '/nerd-sandbox');
  expect(sandbox({ prompt: 'x', seed: 123, steps: 24, guidance: 4.0, width: 768, height: 768 })).toBe(true);
});
