import { isRedisConnectionError, parseSentinelUrl, redisOptions } from './redis';
import { parseSettings } from './settings';

describe('REDIS_URL', () => {
  it('a plain URL gives host, port, credentials and db', () => {
    expect(redisOptions('redis://user:p%40ss@10.0.0.5:6380/2')).toMatchObject({ host: '10.0.0.5', port: 6380, username: 'user', password: 'p@ss', db: 2 });
    expect(redisOptions('redis://127.0.0.1:6379')).toMatchObject({ host: '127.0.0.1', port: 6379, db: 0, username: undefined, password: undefined });
    expect(redisOptions('rediss://cache.internal')).toMatchObject({ host: 'cache.internal', port: 6379, tls: {} });
  });

  it('the Sentinel form names the Sentinels, the master and its db; options given by the caller are kept', () => {
    expect(parseSentinelUrl('redis-sentinel://127.0.0.1:26379,127.0.0.1:26380,[::1]:26381/mymaster')).toEqual({
      sentinels: [
        { host: '127.0.0.1', port: 26379 },
        { host: '127.0.0.1', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      name: 'mymaster',
      db: 0,
      username: undefined,
      password: undefined,
    });
    const options = redisOptions('redis-sentinel://:secret@s1:26379,s2:26379/flexy/3', { maxRetriesPerRequest: null });
    expect(options).toMatchObject({ name: 'flexy', db: 3, password: 'secret', sentinels: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }], maxRetriesPerRequest: null });
    expect((options.reconnectOnError as (e: Error) => unknown)(new Error("READONLY You can't write against a read only replica."))).toBe(2);
    expect(parseSentinelUrl('redis://127.0.0.1:6379')).toBeNull();
  });

  it.each([
    ['redis-sentinel://s1:26379', /master name is missing/],
    ['redis-sentinel://s1:26379/', /expected …\/<master name>/],
    ['redis-sentinel://s1/mymaster', /"s1" is not host:port/],
    ['redis-sentinel://s1:26379/mymaster/x', /expected …\/<master name>/],
  ])('%s is refused, saying why', (url, why) => {
    expect(() => parseSentinelUrl(url)).toThrow(why);
  });

  it('the settings schema accepts both forms and refuses others, naming the variable', () => {
    expect(parseSettings({ REDIS_URL: 'redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster' }).REDIS_URL).toBe('redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster');
    expect(() => parseSettings({ REDIS_URL: 'redis-sentinel://127.0.0.1/mymaster' })).toThrow(/REDIS_URL/);
    expect(() => parseSettings({ REDIS_URL: 'http://127.0.0.1:6379' })).toThrow(/REDIS_URL/);
  });

  it('tells a connection failure (one line per outage) from other errors', () => {
    expect(isRedisConnectionError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isRedisConnectionError(new Error('All sentinels are unreachable. Retrying from scratch after 10ms.'))).toBe(true);
    expect(isRedisConnectionError(new Error("READONLY You can't write against a read only replica."))).toBe(false);
  });
});
