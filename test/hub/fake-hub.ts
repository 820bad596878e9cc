/**
 * A hub on loopback that answers with the real API's shapes, for testing the download CLI:
 *  GET /api/models/{repo}/revision/{rev}        model info with the commit `sha`
 *  GET /api/models/{repo}/tree/{rev}[/{path}]   file listing at a revision, paginated by Link headers,
 *                                               LFS entries with {oid (sha256), size, pointerSize}
 *  GET|HEAD /{repo}/resolve/{rev}/{path}        small files served directly (ETag = git blob sha1),
 *                                               LFS files redirected (302) to a signed CDN URL on
 *                                               another origin, with X-Linked-Etag / X-Linked-Size
 *  GET /lfs/{sha256}?X-Amz-Signature=…          the CDN: Range requests, ETag = sha256
 * Gated repos answer 401/403 with X-Error-Code: GatedRepo as the hub does. Faults (dropped
 * connections, stalls, corrupt bytes, ignored Range) can be armed per LFS object.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface FakeFile {
  content: Buffer;
  lfs: boolean;
}

interface Commit {
  sha: string;
  files: Map<string, FakeFile>;
}

interface Repo {
  id: string;
  gated: false | 'manual';
  commits: Map<string, Commit>;
  refs: Map<string, string>;
}

export interface RequestRecord {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  range?: string;
  authorization?: string;
  status?: number;
  /** Body bytes sent (CDN only). */
  sent?: number;
}

export interface CdnFault {
  /** Send this many body bytes, then cut the connection. */
  dropAfter?: number;
  /** Send this many body bytes, then hold the connection open until releaseStalls(). */
  stallAfter?: number;
  /** Flip a byte of the body. */
  corrupt?: boolean;
  /** Answer 200 with the whole file to a Range request. */
  ignoreRange?: boolean;
  /** How many responses the fault applies to (default 1). */
  times?: number;
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
export const gitBlobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const isLfsPath = (path: string) => /\.(safetensors|bin|model|pt|jpg|png)$/.test(path);

export class FakeHub {
  readonly repos = new Map<string, Repo>();
  readonly requests: RequestRecord[] = [];
  /** token → ids of gated repos whose licence that account accepted. */
  readonly tokens = new Map<string, Set<string>>();
  /** Armed faults by object id: the sha256 of an LFS file, or the git blob sha1 of a small file. */
  readonly faults = new Map<string, CdnFault>();
  /** Called on each resolve request before it is answered (to move a branch mid-pull). */
  onResolve?: (repo: string, revision: string, path: string) => void;
  pageSize = 5;
  hubUrl = '';
  cdnUrl = '';

  private hub?: Server;
  private cdn?: Server;
  private readonly secret = randomBytes(16);
  private readonly sockets = new Set<Socket>();
  private stalled: Array<() => void> = [];

  async start(): Promise<this> {
    this.hub = createServer((req, res) => this.handleHub(req, res));
    this.cdn = createServer((req, res) => this.handleCdn(req, res));
    for (const server of [this.hub, this.cdn]) {
      server.on('connection', (s) => {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    }
    this.hubUrl = `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
    this.cdnUrl = `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.releaseStalls();
    for (const s of this.sockets) s.destroy();
    await Promise.all([this.hub, this.cdn].map((s) => new Promise((r) => (s ? s.close(r) : r(undefined)))));
  }

  releaseStalls(): void {
    const waiting = this.stalled;
    this.stalled = [];
    for (const release of waiting) release();
  }

  addRepo(id: string, options: { gated?: boolean } = {}): void {
    this.repos.set(id, { id, gated: options.gated ? 'manual' : false, commits: new Map(), refs: new Map() });
  }

  /**
   * Adds a commit whose tree is `base`'s (if given) with `files` laid over it (null deletes a path),
   * and points `branch` at it. Returns the commit sha.
   */
  commit(
    repoId: string,
    files: Record<string, Buffer | string | null>,
    options: { branch?: string; base?: string; sha?: string } = {},
  ): string {
    const repo = this.repo(repoId);
    const tree = new Map(options.base ? repo.commits.get(options.base)!.files : []);
    for (const [path, content] of Object.entries(files)) {
      if (content === null) tree.delete(path);
      else {
        const buffer = Buffer.isBuffer(content) ? content : Buffer.from(content);
        tree.set(path, { content: buffer, lfs: isLfsPath(path) || buffer.length > 1_000_000 });
      }
    }
    const sha = options.sha ?? randomBytes(20).toString('hex');
    repo.commits.set(sha, { sha, files: tree });
    repo.refs.set(options.branch ?? 'main', sha);
    return sha;
  }

  moveBranch(repoId: string, branch: string, sha: string): void {
    this.repo(repoId).refs.set(branch, sha);
  }

  file(repoId: string, revision: string, path: string): FakeFile | undefined {
    return this.resolveCommit(this.repo(repoId), revision)?.files.get(path);
  }

  cdnGets(sha?: string): RequestRecord[] {
    return this.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && (!sha || r.path.includes(sha)));
  }

  private repo(id: string): Repo {
    const repo = this.repos.get(id);
    if (!repo) throw new Error(`no fake repo ${id}`);
    return repo;
  }

  private resolveCommit(repo: Repo, revision: string): Commit | undefined {
    const sha = repo.refs.get(revision) ?? revision;
    return repo.commits.get(sha);
  }

  private record(server: 'hub' | 'cdn', req: IncomingMessage): RequestRecord {
    const rec: RequestRecord = {
      server,
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      range: req.headers.range,
      authorization: req.headers.authorization,
    };
    this.requests.push(rec);
    return rec;
  }

  private json(res: ServerResponse, rec: RequestRecord, status: number, body: unknown, headers: Record<string, string> = {}): void {
    rec.status = status;
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', ...headers });
    res.end(JSON.stringify(body));
  }

  private hubError(res: ServerResponse, rec: RequestRecord, status: number, code: string | undefined, message: string): void {
    this.json(res, rec, status, { error: message }, code ? { 'X-Error-Code': code, 'X-Error-Message': message } : { 'X-Error-Message': message });
  }

  private handleHub(req: IncomingMessage, res: ServerResponse): void {
    const rec = this.record('hub', req);
    const url = new URL(req.url ?? '/', this.hubUrl);
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (token && !this.tokens.has(token)) {
      return this.hubError(res, rec, 401, undefined, 'Invalid credentials in Authorization header');
    }

    if (parts[0] === 'api' && parts[1] === 'models') {
      const repoId = `${parts[2]}/${parts[3]}`;
      const repo = this.repos.get(repoId);
      if (!repo) return this.hubError(res, rec, 401, 'RepoNotFound', 'Repository not found');
      const commit = this.resolveCommit(repo, parts[5] ?? 'main');
      if (!commit) return this.hubError(res, rec, 404, 'RevisionNotFound', `Invalid rev id: ${parts[5]}`);
      if (parts[4] === 'revision') {
        return this.json(res, rec, 200, {
          _id: createHash('md5').update(repoId).digest('hex').slice(0, 24),
          id: repoId,
          sha: commit.sha,
          private: false,
          gated: repo.gated,
          downloads: 0,
          likes: 0,
          pipeline_tag: 'text-to-image',
          lastModified: new Date(0).toISOString(),
          siblings: [...commit.files.keys()].map((rfilename) => ({ rfilename })),
        });
      }
      if (parts[4] === 'tree') return this.tree(req, res, rec, url, repoId, commit, parts.slice(6).join('/'));
    }

    const resolveAt = parts.indexOf('resolve');
    if (resolveAt === 2 && (req.method === 'GET' || req.method === 'HEAD')) {
      const repoId = `${parts[0]}/${parts[1]}`;
      const repo = this.repos.get(repoId);
      if (!repo) return this.hubError(res, rec, 401, 'RepoNotFound', 'Repository not found');
      const revision = parts[3];
      const path = parts.slice(4).join('/');
      this.onResolve?.(repoId, revision, path);
      if (repo.gated) {
        if (!token) {
          return this.hubError(
            res,
            rec,
            401,
            'GatedRepo',
            `Access to model ${repoId} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
          );
        }
        if (!this.tokens.get(token)?.has(repoId)) {
          return this.hubError(
            res,
            rec,
            403,
            'GatedRepo',
            `Access to model ${repoId} is restricted and you are not in the authorized list. Visit https://huggingface.co/${repoId} to ask for access.`,
          );
        }
      }
      const commit = this.resolveCommit(repo, revision);
      if (!commit) return this.hubError(res, rec, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
      const file = commit.files.get(path);
      if (!file) return this.hubError(res, rec, 404, 'EntryNotFound', `Entry not found`);
      const common = { 'X-Repo-Commit': commit.sha, 'Access-Control-Expose-Headers': 'X-Repo-Commit,X-Linked-Etag,X-Linked-Size' };
      if (file.lfs) {
        const oid = sha256(file.content);
        const expires = String(Date.now() + 3_600_000);
        const sig = createHmac('sha256', this.secret).update(`${oid}:${expires}`).digest('hex');
        rec.status = 302;
        const body = 'Found. Redirecting';
        res.writeHead(302, {
          ...common,
          Location: `${this.cdnUrl}/lfs/${oid}?X-Amz-Expires=${expires}&X-Amz-Signature=${sig}`,
          'X-Linked-Etag': `"${oid}"`,
          'X-Linked-Size': String(file.content.length),
          ETag: `"${gitBlobSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${file.content.length}\n`))}"`,
          'Content-Type': 'text/plain; charset=utf-8',
          'Content-Length': String(body.length),
        });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      const gitOid = gitBlobSha1(file.content);
      this.sendBytes(req, res, rec, file.content, { ...common, ETag: `"${gitOid}"` }, gitOid);
      return;
    }
    this.hubError(res, rec, 404, undefined, 'Not found');
  }

  private tree(req: IncomingMessage, res: ServerResponse, rec: RequestRecord, url: URL, repoId: string, commit: Commit, under: string): void {
    const recursive = url.searchParams.get('recursive') === 'true';
    const prefix = under ? `${under}/` : '';
    const entries = new Map<string, unknown>();
    for (const [path, file] of [...commit.files].sort(([a], [b]) => a.localeCompare(b))) {
      if (!path.startsWith(prefix)) continue;
      const rest = path.slice(prefix.length).split('/');
      // Folders on the way to each file, as the hub lists them.
      for (let depth = 1; depth < rest.length && (recursive || depth === 1); depth++) {
        const dir = prefix + rest.slice(0, depth).join('/');
        if (!entries.has(dir)) entries.set(dir, { type: 'directory', oid: gitBlobSha1(Buffer.from(dir)), size: 0, path: dir });
      }
      if (!recursive && rest.length > 1) continue;
      const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(file.content)}\nsize ${file.content.length}\n`);
      entries.set(
        path,
        file.lfs
          ? {
              type: 'file',
              oid: gitBlobSha1(pointer),
              size: file.content.length,
              lfs: { oid: sha256(file.content), size: file.content.length, pointerSize: pointer.length },
              path,
            }
          : { type: 'file', oid: gitBlobSha1(file.content), size: file.content.length, path },
      );
    }
    const all = [...entries.values()];
    const cursor = Number(url.searchParams.get('cursor') ?? 0);
    const page = all.slice(cursor, cursor + this.pageSize);
    const headers: Record<string, string> = {};
    if (cursor + this.pageSize < all.length) {
      const next = new URL(url.href);
      next.searchParams.set('cursor', String(cursor + this.pageSize));
      headers.Link = `<${next.href}>; rel="next"`;
    }
    void req;
    void repoId;
    this.json(res, rec, 200, page, headers);
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    const rec = this.record('cdn', req);
    const url = new URL(req.url ?? '/', this.cdnUrl);
    const match = /^\/lfs\/([0-9a-f]{64})$/.exec(url.pathname);
    const expires = url.searchParams.get('X-Amz-Expires') ?? '';
    const sig = url.searchParams.get('X-Amz-Signature') ?? '';
    const oid = match?.[1] ?? '';
    const expected = createHmac('sha256', this.secret).update(`${oid}:${expires}`).digest('hex');
    if (!match || sig !== expected || Number(expires) < Date.now()) {
      rec.status = 403;
      res.writeHead(403, { 'Content-Type': 'application/xml' });
      res.end('<Error><Code>AccessDenied</Code></Error>');
      return;
    }
    const content = this.findObject(oid);
    if (!content) {
      rec.status = 404;
      res.writeHead(404).end();
      return;
    }
    this.sendBytes(req, res, rec, content, { ETag: `"${oid}"`, 'Content-Type': 'application/octet-stream' }, oid);
  }

  private findObject(oid: string): Buffer | undefined {
    for (const repo of this.repos.values()) {
      for (const commit of repo.commits.values()) {
        for (const file of commit.files.values()) if (file.lfs && sha256(file.content) === oid) return file.content;
      }
    }
    return undefined;
  }

  /** Serves bytes with Range support, applying an armed fault to real body requests. */
  private sendBytes(req: IncomingMessage, res: ServerResponse, rec: RequestRecord, content: Buffer, headers: Record<string, string>, oid?: string): void {
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const probe = req.headers.range === 'bytes=0-0';
    const fault = oid && !probe && req.method === 'GET' ? this.takeFault(oid) : undefined;
    let start = 0;
    let end = content.length - 1;
    let status = 200;
    if (range && !fault?.ignoreRange) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), content.length - 1) : content.length - 1;
      if (start >= content.length) {
        rec.status = 416;
        res.writeHead(416, { 'Content-Range': `bytes */${content.length}` }).end();
        return;
      }
      status = 206;
    }
    let body = content.subarray(start, end + 1);
    if (fault?.corrupt) {
      body = Buffer.from(body);
      body[Math.floor(body.length / 2)] ^= 0xff;
    }
    rec.status = status;
    res.writeHead(status, {
      ...headers,
      'Accept-Ranges': 'bytes',
      'Content-Length': String(body.length),
      ...(status === 206 ? { 'Content-Range': `bytes ${start}-${end}/${content.length}` } : {}),
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const cut = fault?.dropAfter ?? fault?.stallAfter;
    if (cut === undefined) {
      rec.sent = body.length;
      res.end(body);
      return;
    }
    rec.sent = Math.min(cut, body.length);
    res.write(body.subarray(0, cut), () => {
      if (fault?.dropAfter !== undefined) {
        res.socket?.destroy();
        return;
      }
      this.stalled.push(() => res.socket?.destroy());
    });
  }

  private takeFault(oid: string): CdnFault | undefined {
    const fault = this.faults.get(oid);
    if (!fault) return undefined;
    const times = (fault.times ?? 1) - 1;
    if (times <= 0) this.faults.delete(oid);
    else fault.times = times;
    return fault;
  }
}

/**
 * Fills the fake hub with the catalog's repos in a diffusers layout: the files each engine's allow
 * patterns select, plus files they must leave out (single-file checkpoints, non-fp16 weights, docs).
 */
export function seedCatalogRepos(
  hub: FakeHub,
  specs: Array<{ id: string; hubRepo: string; revision: string; gated: boolean }>,
  bigShardBytes = 3_000_000,
): Record<string, string> {
  const commits: Record<string, string> = {};
  const blob = (n: number) => randomBytes(n);
  for (const spec of specs) {
    hub.addRepo(spec.hubRepo, { gated: spec.gated });
    const files: Record<string, Buffer | string> = {
      'README.md': `# ${spec.hubRepo}\n`,
      '.gitattributes': '*.safetensors filter=lfs diff=lfs merge=lfs -text\n',
      'LICENSE.md': 'licence text\n',
      'model_index.json': JSON.stringify({ _class_name: 'Pipeline', _diffusers_version: '0.42.1' }),
      'scheduler/scheduler_config.json': JSON.stringify({ _class_name: 'FlowMatchEulerDiscreteScheduler' }),
      'tokenizer/vocab.json': JSON.stringify({ a: 1, b: 2 }),
      'tokenizer/merges.txt': '#version: 0.2\na b\n',
      'vae/config.json': JSON.stringify({ _class_name: 'AutoencoderKL' }),
      'text_encoder/config.json': JSON.stringify({ architectures: ['CLIPTextModel'] }),
    };
    if (spec.id === 'realvis_xl') {
      Object.assign(files, {
        'unet/config.json': JSON.stringify({ _class_name: 'UNet2DConditionModel' }),
        'unet/diffusion_pytorch_model.fp16.safetensors': blob(bigShardBytes),
        'unet/diffusion_pytorch_model.safetensors': blob(400_000),
        'vae/diffusion_pytorch_model.fp16.safetensors': blob(150_000),
        'text_encoder/model.fp16.safetensors': blob(120_000),
        'RealVisXL_V5.0_fp16.safetensors': blob(500_000),
      });
    } else {
      Object.assign(files, {
        'transformer/config.json': JSON.stringify({ _class_name: 'Transformer' }),
        'transformer/diffusion_pytorch_model-00001-of-00002.safetensors': blob(bigShardBytes),
        'transformer/diffusion_pytorch_model-00002-of-00002.safetensors': blob(700_000),
        'transformer/diffusion_pytorch_model.safetensors.index.json': JSON.stringify({ weight_map: {} }),
        'vae/diffusion_pytorch_model.safetensors': blob(150_000),
        'text_encoder/model.safetensors': blob(120_000),
        'tokenizer_2/spiece.model': blob(30_000),
        'tokenizer_2/tokenizer_config.json': JSON.stringify({ model_max_length: 512 }),
        [`${spec.id}-single-file.safetensors`]: blob(500_000),
      });
    }
    if (spec.id === 'flux2_dev_4bit') {
      Object.assign(files, {
        'processor/preprocessor_config.json': JSON.stringify({ image_processor_type: 'PixtralImageProcessor' }),
        'text_encoder/generation_config.json': JSON.stringify({ do_sample: false }),
      });
    }
    const pinned = /^[0-9a-f]{40}$/.test(spec.revision) ? spec.revision : undefined;
    commits[spec.id] = hub.commit(spec.hubRepo, files, { sha: pinned });
  }
  return commits;
}
