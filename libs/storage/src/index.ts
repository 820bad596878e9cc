export * from './image-store';
export * from './png-text';
