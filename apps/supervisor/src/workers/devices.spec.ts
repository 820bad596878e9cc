import { loadConfig } from '@flexy/config';
import { resolveDevices } from './devices';
import { workerEnvironment } from './worker-pool.service';

describe('WORKER_DEVICES: workers and device groups', () => {
  it.each([
    ['0,1', [{ id: 'gpu0', cudaVisibleDevices: '0' }, { id: 'gpu1', cudaVisibleDevices: '1' }]],
    ['0+1', [{ id: 'gpu0+1', cudaVisibleDevices: '0,1', ranks: 2 }]],
    ['0+1,2+3', [{ id: 'gpu0+1', cudaVisibleDevices: '0,1', ranks: 2 }, { id: 'gpu2+3', cudaVisibleDevices: '2,3', ranks: 2 }]],
    ['0, 1 + 2', [{ id: 'gpu0', cudaVisibleDevices: '0' }, { id: 'gpu1+2', cudaVisibleDevices: '1,2', ranks: 2 }]],
    ['cpu', [{ id: 'cpu' }]],
    ['cpu+cpu', [{ id: 'cpu+cpu', ranks: 2 }]],
    ['cpu,cpu', [{ id: 'cpu0' }, { id: 'cpu1' }]],
    ['cpu,cpu+cpu', [{ id: 'cpu0' }, { id: 'cpu1x2', ranks: 2 }]],
  ])('%s is one worker per comma, a group per +', async (spec, devices) => {
    const config = loadConfig({ WORKER_DEVICES: spec }); // the schema takes it
    expect(await resolveDevices(config.workerDevices)).toEqual(devices);
  });

  it('auto with CUDA_VISIBLE_DEVICES: one worker per listed GPU', async () => {
    expect(await resolveDevices('auto', '2,3')).toEqual([
      { id: 'gpu2', cudaVisibleDevices: '2' },
      { id: 'gpu3', cudaVisibleDevices: '3' },
    ]);
  });

  it("a group's environment: its GPUs, its size, and rank 0 for the process the supervisor starts", async () => {
    const config = loadConfig({});
    const [gpus] = await resolveDevices('0+1');
    expect(workerEnvironment(config, gpus, [])).toMatchObject({
      CUDA_VISIBLE_DEVICES: '0,1',
      FLEXY_WORKER_DEVICE: 'cuda',
      FLEXY_WORKER_WORLD_SIZE: '2',
      FLEXY_WORKER_RANK: '0',
    });
    const [cpus] = await resolveDevices('cpu+cpu');
    expect(workerEnvironment(config, cpus, [])).toMatchObject({ CUDA_VISIBLE_DEVICES: '', FLEXY_WORKER_DEVICE: 'cpu', FLEXY_WORKER_WORLD_SIZE: '2' });
    expect(workerEnvironment(config, { id: 'gpu1', cudaVisibleDevices: '1' }, [])).toMatchObject({ FLEXY_WORKER_WORLD_SIZE: '1' });
  });
});
