import { loadConfig } from '@flexy/config';
import { workerEnvironment } from './worker-pool.service';

describe("a worker's environment (its one channel of settings)", () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
  });

  it("carries the validated worker settings and this worker's device and preload set, and none of the service's own settings", () => {
    process.env.ADMIN_PASSWORD = 'not-for-the-worker';
    process.env.FLUX2_TEXT_ENCODER = 'raw value the schema never saw';
    process.env.OMP_NUM_THREADS = '1'; // the host's own variables pass through
    const config = loadConfig({ FLUX2_TEXT_ENCODER: 'local', WORKER_VRAM_BUDGET_GB: '20', FLEXY_FAULT_OOM_ON_JOB: '[oom]', ADMIN_PASSWORD: 'x' });
    const env = workerEnvironment(config, { id: 'gpu1', cudaVisibleDevices: '1' }, ['flux1_dev', 'sd3_medium']);
    expect(env).toMatchObject({
      FLUX2_TEXT_ENCODER: 'local',
      WORKER_VRAM_BUDGET_GB: '20',
      FLEXY_FAULT_OOM_ON_JOB: '[oom]',
      MODELS_DIR: config.modelsDir,
      FLEXY_ENGINE_CATALOG: config.engineCatalogPath,
      FLEXY_WORKER_DEVICE: 'cuda',
      CUDA_VISIBLE_DEVICES: '1',
      WORKER_PRELOAD: 'flux1_dev,sd3_medium',
      HF_HUB_OFFLINE: '1',
      OMP_NUM_THREADS: '1',
    });
    expect(env).not.toHaveProperty('ADMIN_PASSWORD');
    expect(env).not.toHaveProperty('DATABASE_URL');
    expect(workerEnvironment(config, { id: 'cpu' }, [])).toMatchObject({ FLEXY_WORKER_DEVICE: 'cpu', CUDA_VISIBLE_DEVICES: '', WORKER_PRELOAD: '' });
  });
});
