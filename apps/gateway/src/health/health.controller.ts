import { Controller, Get } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';

@ApiTags('health')
@Controller('health')
export class HealthController {
  /** Liveness: the process is up and its event loop answers. */
  @Get('live')
  live() {
    return { status: 'ok' };
  }
}
