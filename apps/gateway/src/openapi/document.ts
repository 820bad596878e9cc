import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, getSchemaPath, SwaggerModule, type OpenAPIObject } from '@nestjs/swagger';
import type { OperationObject, ParameterObject, ReferenceObject } from '@nestjs/swagger/dist/interfaces/open-api-spec.interface';
import { ErrorBody } from '../common/api-responses';
import { requestBodySchemas } from './request-bodies';

/** Operations anyone may call (the @Public() routes): health checks and metrics. */
export const PUBLIC_OPERATIONS = ['live', 'ready', 'metrics'] as const;

/**
 * The OpenAPI document: what the controllers declare (routes, statuses, response classes, links),
 * the request bodies generated from the engine catalog, and who may call what. Served at
 * /docs/openapi.json and committed as docs/openapi.json (`npm run openapi` rewrites it; a test
 * keeps the two equal).
 */
export function buildOpenApiDocument(app: INestApplication): OpenAPIObject {
  const config = new DocumentBuilder()
    .setTitle('FlexyFace image service')
    .setDescription(
      'Text-to-image generation on FLUX.2 [dev] 4-bit, FLUX.1 [dev], SD3 Medium and RealVisXL.\n\n' +
        'Every error answers one shape (ErrorBody). A 400 means the request breaks a rule this document states; a 422 that it fits ' +
        'the document but cannot be carried out as asked (a reference image that does not decode, a webhook target that is not ' +
        'public, settings one of a batch’s engines refuses, an unknown cursor, an Idempotency-Key reused with another body). ' +
        'A method a path does not answer is a 405 with Allow. Optional fields are left out for their defaults; `null` is refused.',
    )
    .setVersion('1')
    .addBearerAuth({ type: 'http', scheme: 'bearer', bearerFormat: 'API key', description: 'An API key (`npm run keys -- create`).' }, 'bearer')
    .addApiKey({ type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'The same key, in its own header.' }, 'apiKey')
    .build();
  const document = SwaggerModule.createDocument(app, config, { extraModels: [ErrorBody] });
  document.components = { ...document.components, schemas: { ...document.components?.schemas, ...requestBodySchemas() } };
  // Open mode (the embedded default on loopback) needs no key: the empty requirement says so.
  document.security = [{ bearer: [] }, { apiKey: [] }, {}];
  for (const item of Object.values(document.paths)) {
    for (const operation of Object.values(item) as OperationObject[]) {
      if (!operation || typeof operation !== 'object' || !('responses' in operation)) continue;
      if ((PUBLIC_OPERATIONS as readonly string[]).includes(operation.operationId ?? '')) operation.security = [];
      operation.parameters &&= documentedHeadersOnly(operation.parameters);
      // Open mode serves loopback host names only, on every route (loopbackHostOnly).
      operation.responses['403'] ??= {
        description: 'In open mode, the Host header is not a loopback name.',
        content: { 'application/json': { schema: { $ref: getSchemaPath(ErrorBody) } } },
      };
    }
  }
  return document;
}

/**
 * Nest also lists every @Headers('name') argument as a required header of its own; the header the
 * route documents (@ApiHeader, with its casing, rules and description) is the one that stays.
 */
function documentedHeadersOnly(parameters: Array<ParameterObject | ReferenceObject>): Array<ParameterObject | ReferenceObject> {
  const described = new Set(
    parameters.filter((p): p is ParameterObject => 'in' in p && p.in === 'header' && !!p.description).map((p) => p.name.toLowerCase()),
  );
  return parameters.filter((p) => !('in' in p) || p.in !== 'header' || !!p.description || !described.has(p.name.toLowerCase()));
}
