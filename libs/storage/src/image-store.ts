import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface StoredImage {
  path: string;
  bytes: number;
}

/**
 * Images on a local (or shared, mounted) folder. The file name is derived from the generation id and
 * image index alone, so a retried or redelivered job overwrites its own file instead of leaving an
 * orphan beside it; writes go through a temporary name and an atomic rename.
 */
export class ImageStore {
  constructor(private readonly root: string) {}

  relativePath(generationId: string, index: number, format: string): string {
    return join(generationId.slice(-2), `${generationId}_${index}.${format}`);
  }

  async put(generationId: string, index: number, format: string, data: Buffer): Promise<StoredImage> {
    const rel = this.relativePath(generationId, index, format);
    const abs = join(this.root, rel);
    await mkdir(dirname(abs), { recursive: true });
    const tmp = `${abs}.${process.pid}.tmp`;
    await writeFile(tmp, data);
    await rename(tmp, abs);
    return { path: rel, bytes: data.length };
  }

  read(relativePath: string): Promise<Buffer> {
    return readFile(this.resolve(relativePath));
  }

  async exists(relativePath: string): Promise<boolean> {
    return stat(this.resolve(relativePath)).then(
      () => true,
      () => false,
    );
  }

  /** Removes a stored file; one already gone is not an error, so a repeated removal is harmless. */
  async remove(relativePath: string): Promise<void> {
    await rm(this.resolve(relativePath), { force: true });
  }

  private resolve(relativePath: string): string {
    if (relativePath.includes('..')) throw new Error('invalid image path');
    return join(this.root, relativePath);
  }
}

/** Injection token for the ImageStore. */
export const IMAGE_STORE = Symbol('IMAGE_STORE');
