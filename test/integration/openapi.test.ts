import 'reflect-metadata';
import { METHOD_METADATA, PATH_METADATA } from '@nestjs/common/constants';
import { RequestMethod } from '@nestjs/common';
import Ajv from 'ajv';
import { readFileSync } from 'node:fs';
import { PUBLIC_ROUTE } from '../../apps/gateway/src/auth/api-key.guard';
import { PUBLIC_OPERATIONS } from '../../apps/gateway/src/openapi/document';
import { COMMITTED_DOCUMENT, serialise } from '../contract/write-openapi';
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

interface DeclaredRoute {
  route: string;
  isPublic: boolean;
}

/** Every route the gateway's controllers declare, as "METHOD /path/{param}", from Nest's own metadata. */
function declaredRoutes(): DeclaredRoute[] {
  // Loaded here: the module reads the configuration as it loads.
  const { GatewayModule } = require('../../apps/gateway/src/gateway.module');
  const routes: DeclaredRoute[] = [];
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
      const isPublic = Boolean(Reflect.getMetadata(PUBLIC_ROUTE, handler) ?? Reflect.getMetadata(PUBLIC_ROUTE, controller));
      routes.push({ route: `${method} ${full}`, isPublic });
    }
  }
  return routes;
}

function operations(): Array<[string, string, any]> {
  return Object.entries(spec.paths).flatMap(([path, ops]) => Object.entries(ops as object).map(([method, op]) => [method.toUpperCase(), path, op] as [string, string, any]));
}

function bodySchemaValidator(method: string, path: string) {
  const schema = spec.paths[path][method.toLowerCase()].requestBody.content['application/json'].schema;
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema({ $id: 'openapi', components: spec.components }, 'openapi');
  return ajv.compile({ $ref: `openapi${schema.$ref}` });
}

describe('the document', () => {
  it('is the committed docs/openapi.json (regenerate with `npm run openapi`)', () => {
    expect(readFileSync(COMMITTED_DOCUMENT, 'utf8')).toBe(serialise(spec));
  });

  it('documents every route the controllers declare, and only those', () => {
    const documented = new Set(operations().map(([method, path]) => `${method} ${path}`));
    const declared = declaredRoutes().map((r) => r.route);
    expect(declared.length).toBeGreaterThanOrEqual(20);
    expect(declared.filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((r) => !declared.includes(r))).toEqual([]);
  });

  it('lets anyone call exactly the @Public() routes', () => {
    const publicRoutes = declaredRoutes().filter((r) => r.isPublic).map((r) => r.route).sort();
    const open = operations().filter(([, , op]) => Array.isArray(op.security) && op.security.length === 0);
    expect(open.map(([method, path]) => `${method} ${path}`).sort()).toEqual(publicRoutes);
    expect(open.map(([, , op]) => op.operationId).sort()).toEqual([...PUBLIC_OPERATIONS].sort());
  });

  it('gives every answer of every operation a schema, and every error the one ErrorBody schema', () => {
    const problems: string[] = [];
    for (const [method, path, op] of operations()) {
      if (!op.operationId) problems.push(`${method} ${path}: no operationId`);
      for (const [status, response] of Object.entries(op.responses as Record<string, any>)) {
        const where = `${method} ${path} ${status}`;
        if (status === '204') {
          if (response.content) problems.push(`${where}: a 204 has no body`);
          continue;
        }
        const contents = Object.entries(response.content ?? {}) as Array<[string, any]>;
        if (contents.length === 0) problems.push(`${where}: no content`);
        for (const [type, content] of contents) if (!content.schema) problems.push(`${where} ${type}: no schema`);
        const isError = Number(status) >= 400 && !(path === '/health/ready' && status === '503');
        if (isError && response.content?.['application/json']?.schema?.$ref !== '#/components/schemas/ErrorBody') problems.push(`${where}: not ErrorBody`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('links create → read → image → events → cancel and delete', () => {
    const links = spec.paths['/v1/generations'].post.responses['202'].links;
    expect(Object.values(links).map((l: any) => l.operationId).sort()).toEqual(
      ['cancelGeneration', 'deleteGeneration', 'getGeneration', 'getGenerationImage', 'streamGenerationEvents'].sort(),
    );
    const ids = new Set(operations().map(([, , op]) => op.operationId));
    for (const [method, path, op] of operations()) {
      for (const response of Object.values(op.responses as Record<string, any>)) {
        for (const [name, link] of Object.entries((response.links ?? {}) as Record<string, any>)) {
          expect({ from: `${method} ${path}`, name, target: ids.has(link.operationId) }).toEqual({ from: `${method} ${path}`, name, target: true });
        }
      }
    }
  });

  it('takes its limits from the engine catalog: one variant per engine, discriminated by engine', () => {
    const { ENGINE_CATALOG, ENGINE_IDS } = require('@flexy/engines');
    const { SEED_RANGE } = require('@flexy/contracts');
    expect(spec.components.schemas.GenerationRequest.oneOf).toHaveLength(ENGINE_IDS.length);
    for (const id of ENGINE_IDS) {
      const variant = spec.components.schemas[`GenerationRequest_${id}`];
      const limits = ENGINE_CATALOG[id].limits;
      expect(variant.additionalProperties).toBe(false);
      expect(variant.properties.engine.enum).toEqual([id]);
      expect(variant.properties.width).toMatchObject({ type: 'integer', minimum: limits.minSide, maximum: limits.maxSide, multipleOf: limits.sizeMultiple });
      expect(variant.properties.steps).toMatchObject({ type: 'integer', minimum: limits.steps.min, maximum: limits.steps.max });
      expect(variant.properties.guidance).toMatchObject({ type: 'number', minimum: limits.guidance.min, maximum: limits.guidance.max });
      expect(variant.properties.prompt).toMatchObject({ minLength: 1, maxLength: limits.maxPromptChars });
      expect(variant.properties.seed).toMatchObject({ minimum: SEED_RANGE.min, maximum: SEED_RANGE.max });
      expect('negative_prompt' in variant.properties).toBe(limits.negativePrompt);
      expect(variant.properties.references.maxItems).toBe(limits.maxReferences);
    }
  });
});

const tiny = { steps: 1, width: 64, height: 64 };

/** [route, a body the route accepts] — the schema must accept each as well. */
const accepted: Array<[string, string, Record<string, unknown>]> = [
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev' }],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'sd3_medium', seed: 1, steps: 20, guidance: 7, width: 512, height: 768, negative_prompt: 'b', num_images: 2, webhook_url: 'http://93.184.215.14/x' }],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'realvis_xl', width: 1000, references: [], negative_prompt: '' }],
  ['POST', '/v1/generations', { prompt: '\u{1F600}'.repeat(1000), engine: 'realvis_xl' }],
  ['POST', '/v1/sandbox-runs', { prompt: 'a', seed: 123, steps: 2, guidance: 4.0, width: 64, height: 64, engines: ['flux1_dev'] }],
  ['POST', '/v1/sandbox-runs', { prompt: 'a', width: 4096, engines: ['flux1_dev'] }],
  ['POST', '/v1/batches', { prompts: ['a', 'b'], engines: ['realvis_xl'], seeds: [1], ...tiny }],
];

it.each(accepted)('%s %s: the schema accepts what the route accepts (case %#)', async (method, path, body) => {
  const validate = bodySchemaValidator(method, path);
  expect(validate(body)).toBe(true);
  const res = await api(stack, method, path, body);
  expect(res.status).toBe(202);
});

/** [route, a body the route refuses with a 400] — the schema refuses each too: these are rules it states. */
const refused: Array<[string, string, unknown, string]> = [
  ['POST', '/v1/generations', { prompt: 'a' }, 'engine'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'nope' }, 'engine'],
  ['POST', '/v1/generations', { prompt: '   ', engine: 'flux1_dev' }, 'prompt'],
  ['POST', '/v1/generations', { prompt: 'a\u0000', engine: 'flux1_dev' }, 'prompt'],
  ['POST', '/v1/generations', { prompt: 'a'.repeat(1001), engine: 'realvis_xl' }, 'prompt'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', width: 1000 }, 'width'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', width: 4096 }, 'width'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', steps: 101 }, 'steps'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', guidance: 10.5 }, 'guidance'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', negative_prompt: 'x' }, 'negative_prompt'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', references: ['data:image/png;base64,AAAA'] }, 'references'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', seed: 2 ** 32 }, 'seed'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', webhook_url: 'ftp://example.com/x' }, 'webhook_url'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', webhook_url: 'http://user:pw@example.com/x' }, 'webhook_url'],
  ['POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', sampler: 'euler' }, 'sampler'],
  ['POST', '/generate', { prompt: 'a', engine: 'sd3_medium', width: 4096 }, 'width'],
  ['POST', '/nerd-sandbox', { seed: 1 }, 'prompt'],
  ['POST', '/v1/sandbox-runs', { prompt: 'a', engines: [] }, 'engines'],
  ['POST', '/v1/sandbox-runs', { prompt: 'a', engines: ['flux1_dev', 'flux1_dev'] }, 'engines'],
  ['POST', '/v1/sandbox-runs', { prompt: 'a', width: 8192 }, 'width'],
  ['POST', '/v1/sandbox-runs', { prompt: 'a', steps: 0 }, 'steps'],
  ['POST', '/v1/batches', { prompts: [], engines: ['flux1_dev'] }, 'prompts'],
  ['POST', '/v1/batches', { prompts: ['a'], engines: ['flux1_dev'], seeds: [] }, 'seeds'],
  ['POST', '/v1/batches', { prompts: ['a'], engines: ['flux1_dev'], width: 100 }, 'width'],
];

it.each(refused)('%s %s: the schema refuses what the route refuses with a 400 (case %#)', async (method, path, body, field) => {
  expect(bodySchemaValidator(method, path)(body)).toBe(false);
  const res = await api(stack, method, path, body);
  expect(res.status).toBe(400);
  expect(res.json.fields.map((f: { field: string }) => f.field)).toContain(field);
});

describe('explicit null', () => {
  const nulls: Array<[string, Record<string, unknown>, string]> = [
    ['/v1/generations', { prompt: 'a', engine: 'sd3_medium', negative_prompt: null }, 'negative_prompt'],
    ['/v1/generations', { prompt: 'a', engine: 'flux1_dev', seed: null }, 'seed'],
    ['/generate', { prompt: 'a', engine: null }, 'engine'],
    ['/generate', { prompt: 'a', steps: null }, 'steps'],
    ['/generate', { prompt: 'a', width: null, height: null, guidance: null }, 'width'],
    ['/v1/sandbox-runs', { prompt: 'a', engines: null }, 'engines'],
    ['/v1/batches', { prompts: ['a'], engines: ['flux1_dev'], seeds: null }, 'seeds'],
  ];
  it.each(nulls)('%s: is refused with a 400 naming the field, as the (not nullable) schema says (case %#)', async (path, body, field) => {
    expect(bodySchemaValidator('POST', path)(body)).toBe(false);
    const res = await api(stack, 'POST', path, body);
    expect(res.status).toBe(400);
    expect(res.json.message).toMatch(new RegExp(`${field} must not be null`));
  });
});

describe('what fits the schema but cannot be done is a 422 naming the field', () => {
  const unprocessable: Array<[string, Record<string, unknown>, string]> = [
    ['/v1/generations', { prompt: 'a', engine: 'flux1_dev', width: 2048, height: 2048 }, 'width'],
    ['/v1/generations', { prompt: 'a', engine: 'flux2_dev_4bit', references: ['data:image/png;base64,bm90IGFuIGltYWdl'] }, 'references[0]'],
    ['/v1/generations', { prompt: 'a', engine: 'flux1_dev', webhook_url: 'http://127.0.0.1/hook' }, 'webhook_url'],
    ['/v1/batches', { prompts: ['a'], engines: ['flux1_dev', 'realvis_xl'], width: 1000 }, 'width'],
    ['/v1/batches', { prompts: ['a'.repeat(1500)], engines: ['realvis_xl'] }, 'prompts[0]'],
  ];
  it.each(unprocessable)('%s (case %#)', async (path, body, field) => {
    expect(bodySchemaValidator('POST', path)(body)).toBe(true);
    const res = await api(stack, 'POST', path, body);
    expect(res.status).toBe(422);
    expect(res.json).toMatchObject({ statusCode: 422, error: 'Unprocessable Entity' });
    expect(res.json.fields.map((f: { field: string }) => f.field)).toContain(field);
  });

  it('an unknown list cursor', async () => {
    const res = await api(stack, 'GET', '/v1/generations?cursor=not-a-cursor');
    expect(res.status).toBe(422);
    expect(res.json.fields).toEqual([{ field: 'cursor', message: expect.any(String) }]);
  });
});

describe('every error has the one ErrorBody shape', () => {
  const validateError = () => {
    const ajv = new Ajv({ strict: false, allErrors: true });
    ajv.addSchema({ $id: 'openapi', components: spec.components }, 'openapi');
    return ajv.compile({ $ref: 'openapi#/components/schemas/ErrorBody' });
  };

  it.each([
    ['validation (400)', 'POST', '/v1/generations', { prompt: 'a', engine: 'flux1_dev', width: 1000 }, 400],
    ['malformed JSON (400)', 'POST', '/v1/generations', '{"prompt": ', 400],
    ['an unknown generation (404)', 'GET', '/v1/generations/gen_00000000000000000000000000000000', undefined, 404],
    ["Nest's router: an unknown path (404)", 'GET', '/v1/nothing-here', undefined, 404],
    ['a method the path does not answer (405)', 'PUT', '/v1/generations', { prompt: 'a' }, 405],
    ['a body over MAX_BODY_BYTES (413)', 'POST', '/v1/generations', JSON.stringify({ prompt: 'a'.repeat(17 * 1024 * 1024) }), 413],
  ])('%s', async (_name, method, path, body, status) => {
    const res = await api(stack, method as string, path as string, body);
    expect(res.status).toBe(status);
    const validate = validateError();
    expect({ body: res.json, valid: validate(res.json) }).toEqual({ body: res.json, valid: true });
    expect(res.json).toMatchObject({ statusCode: status, error: expect.any(String), message: expect.any(String) });
  });

  it('405 names the allowed methods in Allow, and OPTIONS answers them', async () => {
    const put = await api(stack, 'PUT', '/v1/generations/gen_00000000000000000000000000000000');
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('DELETE, GET, HEAD, OPTIONS');
    const options = await api(stack, 'OPTIONS', '/v1/batches/bat_00000000000000000000000000000000/cancel');
    expect(options.status).toBe(204);
    expect(options.headers.get('allow')).toBe('OPTIONS, POST');
    // Allow lists what the document lists for the path (HEAD and OPTIONS besides).
    for (const [path, ops] of Object.entries(spec.paths as Record<string, object>)) {
      const concrete = path.replace('{id}', 'gen_00000000000000000000000000000000');
      const res = await api(stack, 'OPTIONS', concrete);
      const allowed = (res.headers.get('allow') ?? '').split(', ').filter((m) => m !== 'HEAD' && m !== 'OPTIONS');
      expect({ path, allowed }).toEqual({ path, allowed: Object.keys(ops).map((m) => m.toUpperCase()).sort() });
    }
  });
});

it('the PromptPics requests of the brief match the documented schemas', () => {
  const generate = bodySchemaValidator('POST', '/generate');
  expect(generate({ prompt: 'x', engine: 'flux2_dev_4bit', seed: 42, steps: 24, guidance: 4.0, width: 768, height: 768 })).toBe(true);
  expect(generate({ prompt: 'x' })).toBe(true);
  const sandbox = bodySchemaValidator('POST', '/nerd-sandbox');
  expect(sandbox({ prompt: 'x', seed: 123, steps: 24, guidance: 4.0, width: 768, height: 768 })).toBe(true);
});
