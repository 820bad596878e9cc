export * from './events';
export * from './generation';
export * from './jobs';
export * from './parse-job';
export * from './quota-keys';
export * from './worker-status';
export * from './wire/protocol';
export * from './wire/codec';
