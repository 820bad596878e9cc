import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export interface WorkerDevice {
  /** Stable worker id within this host: gpu0, gpu1, gpu0+1 (a group), cpu, cpu+cpu, or cpu0, cpu1… */
  id: string;
  /** CUDA_VISIBLE_DEVICES for the process ('1', or '0,1' for a group); undefined on the CPU. */
  cudaVisibleDevices?: string;
  /**
   * Processes of this worker: 1, or one per device of a group, which runs each image across them.
   * The supervisor starts only the first (rank 0); it starts the others. Either way, one slot.
   */
  ranks?: number;
}

/**
 * 'auto' → one worker per visible GPU (nvidia-smi, or the list `cudaVisible` when the supervisor was
 * started with CUDA_VISIBLE_DEVICES), else one CPU worker; 'cpu'; 'cpu+cpu' (a group of two CPU
 * processes); 'cpu,cpu' (two CPU workers); or a list such as '0,1', '0+1,2+3' or '0,1+2' (the
 * configuration checked its shape).
 */
export async function resolveDevices(spec: string, cudaVisible?: string): Promise<WorkerDevice[]> {
  if (spec.startsWith('cpu')) {
    // CPU forms stand in for GPUs in tests: one worker is 'cpu' or 'cpu+cpu'; several are cpu0, cpu1…
    const workers = spec.split(',').map((worker) => worker.split('+').length);
    return workers.map((ranks, i) => {
      const id = workers.length === 1 ? Array(ranks).fill('cpu').join('+') : `cpu${i}${ranks > 1 ? `x${ranks}` : ''}`;
      return ranks > 1 ? { id, ranks } : { id };
    });
  }
  let workers: string[][];
  if (spec === 'auto') {
    let indices = await promisify(execFile)('nvidia-smi', ['--query-gpu=index', '--format=csv,noheader'], { timeout: 10_000 })
      .then(({ stdout }) => stdout.split('\n').map((s) => s.trim()).filter(Boolean))
      .catch(() => [] as string[]);
    if (cudaVisible !== undefined) indices = cudaVisible.split(',').map((s) => s.trim()).filter(Boolean);
    workers = indices.map((index) => [index]);
  } else {
    workers = spec.split(',').map((worker) => worker.split('+').map((s) => s.trim()));
  }
  if (workers.length === 0) return [{ id: 'cpu' }];
  return workers.map((gpus) =>
    gpus.length === 1
      ? { id: `gpu${gpus[0]}`, cudaVisibleDevices: gpus[0] }
      : { id: `gpu${gpus.join('+')}`, cudaVisibleDevices: gpus.join(','), ranks: gpus.length },
  );
}
