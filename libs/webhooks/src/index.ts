export * from './address-policy';
export * from './webhook-target';
export * from './deliver';
