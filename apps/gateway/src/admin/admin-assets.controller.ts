import { Controller, Get, NotFoundException, Param, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Response } from 'express';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Public } from '../auth/api-key.guard';

/** The dashboard's one script and one stylesheet, served by the gateway itself (no CDN, no build step). */
const FILES: Record<string, { type: string; body: Buffer }> = {
  'admin.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(join(__dirname, 'assets/admin.js')) },
  'admin.css': { type: 'text/css; charset=utf-8', body: readFileSync(join(__dirname, 'assets/admin.css')) },
};

/** Changes whenever either file does, so pages can let browsers cache the assets for a day. */
export const ASSET_VERSION = createHash('sha256')
  .update(FILES['admin.js'].body)
  .update(FILES['admin.css'].body)
  .digest('hex')
  .slice(0, 12);

@ApiExcludeController()
// The API-key guard stands aside: the dashboard has its own (sessions, admin and readonly keys).
@Public()
@Controller('admin/assets')
export class AdminAssetsController {
  @Get(':file')
  asset(@Param('file') file: string, @Res() res: Response) {
    const asset = Object.hasOwn(FILES, file) ? FILES[file] : undefined;
    if (!asset) throw new NotFoundException();
    res.status(200).type(asset.type).set('Cache-Control', 'public, max-age=86400').send(asset.body);
  }
}
