import type { ResidencyReport } from '@flexy/contracts';
import { withEngineOnDevice } from './worker-process';
import { residencyScore } from './worker-pool.service';
import type { WorkerProcess } from './worker-process';

describe("a worker's residency between its reports", () => {
  const report: ResidencyReport = {
    engines: [{ engine: 'sd3_medium', location: 'host', bytes: 10 }],
    device_bytes_used: 0,
    device_budget_bytes: 100,
    last_load_ms: null,
    last_swap_ms: null,
  };

  it('counts the engine a job just ran on as on the device, so the next job for it is routed there', () => {
    const after = withEngineOnDevice(report, 'flux1_dev');
    expect(after.engines).toEqual([
      { engine: 'sd3_medium', location: 'host', bytes: 10 },
      { engine: 'flux1_dev', location: 'device', bytes: 0 },
    ]);
    expect(residencyScore({ residency: after } as WorkerProcess, 'flux1_dev')).toBe(2);
    expect(withEngineOnDevice(report, 'sd3_medium').engines).toEqual([{ engine: 'sd3_medium', location: 'device', bytes: 10 }]);
    expect(withEngineOnDevice(null, 'realvis_xl').engines).toEqual([{ engine: 'realvis_xl', location: 'device', bytes: 0 }]);
  });

  it('puts a worker that reports the engine unavailable last, whatever it holds', () => {
    const engines = [{ engine: 'flux1_dev', weights: 'demo', revision: 'r', state: 'unavailable', reason: 'a file is truncated', retry_at: 1 }] as const;
    expect(residencyScore({ residency: withEngineOnDevice(report, 'flux1_dev'), engines } as unknown as WorkerProcess, 'flux1_dev')).toBe(-1);
    expect(residencyScore({ residency: report, engines } as unknown as WorkerProcess, 'sd3_medium')).toBe(1);
  });
});
