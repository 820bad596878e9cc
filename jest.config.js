// Unit specs live beside the code (*.spec.ts); cross-process tests live in test/ (*.test.ts).
// swc compiles TypeScript (and the ES-module-only dependencies, such as execa) for Jest.
const swc = ['@swc/jest', { jsc: { parser: { syntax: 'typescript', decorators: true }, transform: { legacyDecorator: true, decoratorMetadata: true, useDefineForClassFields: false }, keepClassNames: true, target: 'es2022' }, module: { type: 'commonjs' } }];
const esmOnly = ['execa', 'is-plain-obj', 'strip-final-newline', 'npm-run-path', 'path-key', 'unicorn-magic', 'pretty-ms', 'parse-ms', 'human-signals', 'is-stream', 'get-stream', '@sec-ant', 'figures', 'is-unicode-supported', 'yoctocolors', 'cross-spawn', '@huggingface'];

const shared = {
  transform: { '^.+\\.(t|j|mj)s$': swc },
  transformIgnorePatterns: [`node_modules/(?!(${esmOnly.join('|')})/)`],
  moduleFileExtensions: ['ts', 'js', 'mjs', 'json'],
  moduleNameMapper: { '^@flexy/([a-z-]+)$': '<rootDir>/libs/$1/src' },
  testEnvironment: 'node',
};

module.exports = {
  projects: [
    { ...shared, displayName: 'unit', testMatch: ['<rootDir>/apps/**/*.spec.ts', '<rootDir>/libs/**/*.spec.ts'] },
    { ...shared, displayName: 'integration', testMatch: ['<rootDir>/test/**/*.test.ts'], slowTestThreshold: 60 },
  ],
};
