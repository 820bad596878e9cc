export {
  DEMO_MARKER_FILE,
  MANIFEST_FILE,
  defaultModelsDir,
  fixCommandFor,
  isBuiltSnapshot,
  readManifest,
  snapshotDir,
  snapshotState,
  verifySnapshot,
  type FileProblem,
  type ManifestFile,
  type SnapshotManifest,
  type SnapshotState,
  type SnapshotStateName,
} from './snapshot';
export { pullEngine, remotePlan, hubUrlFrom, tokenFrom, type PullOptions, type PullResult, type PullReporter, type RemotePlan } from './pull';
export { PullError } from './errors';
export { licenseNotice } from './notices';
export { isAllowed, matchesPattern } from './patterns';
