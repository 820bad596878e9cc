import { loadConfig } from '@flexy/config';
import { webhookUrlProblem, type WebhookPolicy } from '@flexy/webhooks';
import { registerDecorator, type ValidationArguments, type ValidationOptions } from 'class-validator';

let policy: WebhookPolicy | undefined;
/** The message of the last refusal, per request body and field, for defaultMessage to give. */
const problems = new WeakMap<object, Map<string, string>>();

/**
 * An http(s) URL that webhooks may be sent to: no loopback, private, link-local or metadata
 * address in any spelling, nor a host name that resolves to one (WEBHOOK_ALLOW_PRIVATE lets
 * on-premises targets through). Asynchronous: a host name is looked up before anything is stored.
 */
export function IsWebhookTarget(options?: ValidationOptions) {
  return (object: object, propertyName: string) =>
    registerDecorator({
      name: 'isWebhookTarget',
      target: object.constructor,
      propertyName,
      options,
      async: true,
      validator: {
        async validate(value: unknown, args: ValidationArguments) {
          policy ??= { allowPrivate: loadConfig().webhookAllowPrivate };
          const problem = await webhookUrlProblem(value, policy, args.property);
          if (problem) problems.set(args.object, (problems.get(args.object) ?? new Map()).set(args.property, problem.message));
          return problem === null;
        },
        defaultMessage(args: ValidationArguments) {
          return problems.get(args.object)?.get(args.property) ?? `${args.property} must be an http(s) URL`;
        },
      },
    });
}
