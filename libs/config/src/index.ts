export * from './config';
export * from './settings';
export * from './startup';
export * from './settings-table';
export * from './redis';
