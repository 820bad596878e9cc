import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export interface WorkerDevice {
  /** Stable worker id within this host: gpu0, gpu1… or cpu. */
  id: string;
  /** CUDA_VISIBLE_DEVICES for the process; undefined for the CPU worker. */
  cudaVisibleDevices?: string;
}

/**
 * 'auto' → one worker per visible GPU (nvidia-smi, or the list `cudaVisible` when the supervisor was
 * started with CUDA_VISIBLE_DEVICES), else one CPU worker; 'cpu'; or a list like '0,1'.
 */
export async function resolveDevices(spec: string, cudaVisible?: string): Promise<WorkerDevice[]> {
  if (spec === 'cpu') return [{ id: 'cpu' }];
  let indices: string[];
  if (spec === 'auto') {
    indices = await promisify(execFile)('nvidia-smi', ['--query-gpu=index', '--format=csv,noheader'], { timeout: 10_000 })
      .then(({ stdout }) => stdout.split('\n').map((s) => s.trim()).filter(Boolean))
      .catch(() => []);
    if (cudaVisible !== undefined) indices = cudaVisible.split(',').map((s) => s.trim()).filter(Boolean);
  } else {
    indices = spec.split(',').map((s) => s.trim()).filter(Boolean);
  }
  if (indices.length === 0) return [{ id: 'cpu' }];
  return indices.map((index) => ({ id: `gpu${index}`, cudaVisibleDevices: index }));
}
