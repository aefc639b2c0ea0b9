// Copyright (c) 2026, prodready.vps contributors
// GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// prodready sample app (Node.js, no npm dependencies): the same endpoints and
// environment knobs as sample-apps/python/prodready_sample_app.py (see
// sample-apps/README.md), graceful SIGTERM drain and systemd socket activation
// (a listening socket passed as fd 3 with LISTEN_FDS/LISTEN_PID).
//
// It does not speak sd_notify: like most Node apps it cannot without a native
// module. Run it under the collection's watchdog helper
// (plugins/module_utils/watchdog.py), which turns its /health answers into
// READY=1 and WATCHDOG=1 for systemd.
//
// Run: node app.js (Node 18+).
'use strict';

const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');

const SD_LISTEN_FDS_START = 3;
const MIB = 1024 * 1024;
const LAG_TICK_MS = 200;
const DEFAULT_DB_PORTS = {
  postgres: 5432, postgresql: 5432, pgsql: 5432,
  mysql: 3306, mariadb: 3306,
  redis: 6379, rediss: 6379,
  mongodb: 27017, amqp: 5672, amqps: 5671,
};
// Endpoints that keep answering during the drain (probes and diagnostics).
const PROBE_PATHS = new Set(['/health', '/ready', '/status']);
const TAG = 'prodready-sample-app';

class ConfigError extends Error {}

function logInfo(message) {
  process.stdout.write(`${new Date().toISOString()} ${TAG}[${process.pid}]: ${message}\n`);
}

function logError(message) {
  process.stderr.write(`${new Date().toISOString()} ${TAG}[${process.pid}]: ${message}\n`);
}

// KEY=VALUE lines the way systemd's EnvironmentFile= reads them (simplified).
function parseEnvFile(text) {
  const values = {};
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trim();
    if (!line || line[0] === '#' || line[0] === ';') continue;
    if (line.startsWith('export ')) line = line.slice(7).trimStart();
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && value[0] === value[value.length - 1] && (value[0] === '"' || value[0] === "'")) {
      value = value.slice(1, -1);
    }
    if (key) values[key] = value;
  }
  return values;
}

function num(env, key, fallback, { integer = false, min = null, max = null } = {}) {
  const raw = (env[key] || '').trim();
  if (raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new ConfigError(`${key}=${JSON.stringify(raw)} is not a valid ${integer ? 'int' : 'float'}`);
  }
  if ((min !== null && value < min) || (max !== null && value > max)) {
    throw new ConfigError(`${key}=${JSON.stringify(raw)} is out of range [${min}, ${max}]`);
  }
  return value;
}

function flag(env, key) {
  return ['1', 'true', 'yes', 'on'].includes((env[key] || '').trim().toLowerCase());
}

function makeConfig(env) {
  return {
    host: (env.APP_HOST || '').trim() || '127.0.0.1',
    port: num(env, 'APP_PORT', 8000, { integer: true, min: 0, max: 65535 }),
    name: (env.APP_NAME || '').trim() || 'prodready-sample-node',
    version: (env.APP_VERSION || '').trim() || '0.0.0',
    startupDelay: num(env, 'APP_STARTUP_DELAY', 0, { min: 0 }),
    healthStatus: num(env, 'APP_HEALTH_STATUS', 200, { integer: true, min: 200, max: 599 }),
    healthHang: num(env, 'APP_HEALTH_HANG', 0, { min: 0 }),
    noListen: flag(env, 'APP_NO_LISTEN'),
    debug: flag(env, 'APP_DEBUG'),
    balloonMb: num(env, 'APP_MEMORY_BALLOON_MB', 0, { integer: true, min: 0 }),
    drainTimeout: num(env, 'APP_DRAIN_TIMEOUT', 10, { min: 0 }),
    databaseUrl: (env.APP_DATABASE_URL || env.DATABASE_URL || '').trim(),
    dbTimeout: num(env, 'APP_DB_TIMEOUT', 1, { min: 0.01 }),
  };
}

// The environment, overridden by APP_CONFIG_FILE when set (re-read on SIGHUP).
function loadConfig(environ) {
  const env = { ...environ };
  const path = (env.APP_CONFIG_FILE || '').trim();
  if (path) {
    let text;
    try {
      text = fs.readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read APP_CONFIG_FILE ${path}: ${err.code || err.message}`);
    }
    Object.assign(env, parseEnvFile(text));
  }
  return makeConfig(env);
}

// What to check for a database URL; never includes credentials.
function dbTarget(url) {
  const parsed = new URL(url);
  const scheme = parsed.protocol.replace(/:$/, '').split('+')[0].toLowerCase();
  if (scheme === 'sqlite') {
    const path = decodeURIComponent(parsed.pathname);
    return { kind: 'file', path, label: `sqlite:${path}` };
  }
  if (!(scheme in DEFAULT_DB_PORTS)) throw new Error(`unsupported scheme ${JSON.stringify(scheme)}`);
  const port = parsed.port ? Number(parsed.port) : DEFAULT_DB_PORTS[scheme];
  const host = parsed.hostname.replace(/^\[|\]$/g, '') || parsed.searchParams.get('host') || '';
  if (['postgres', 'postgresql', 'pgsql'].includes(scheme) && (!host || host.startsWith('/'))) {
    const path = `${(host || '/var/run/postgresql').replace(/\/$/, '')}/.s.PGSQL.${port}`;
    return { kind: 'unix', path, label: `${scheme}:${path}` };
  }
  if (!host) throw new Error('no host in the URL');
  return { kind: 'tcp', host, port, label: `${scheme}://${host}:${port}` };
}

function checkDatabase(url, timeoutS) {
  if (!url) return Promise.resolve({ status: 'not_configured' });
  let target;
  try {
    target = dbTarget(url);
  } catch (err) {
    return Promise.resolve({ status: 'fail', error: `invalid database URL: ${err.message}` });
  }
  const started = process.hrtime.bigint();
  const done = (result) => ({
    target: target.label,
    ...result,
    response_time_ms: Math.round(Number(process.hrtime.bigint() - started) / 1e5) / 10,
  });
  if (target.kind === 'file') {
    let ok = false;
    try {
      ok = fs.statSync(target.path).isFile();
    } catch (err) {
      ok = false;
    }
    return Promise.resolve(done(ok ? { status: 'pass' } : { status: 'fail', error: 'no such file' }));
  }
  return new Promise((resolve) => {
    const options = target.kind === 'unix' ? { path: target.path } : { host: target.host, port: target.port };
    const sock = net.connect(options);
    let settled = false;
    const settle = (result) => {
      if (settled) return;
      settled = true;
      sock.destroy();
      resolve(done(result));
    };
    sock.setTimeout(timeoutS * 1000, () => settle({ status: 'fail', error: 'timed out' }));
    sock.once('connect', () => settle({ status: 'pass' }));
    sock.once('error', (err) => settle({ status: 'fail', error: err.code || err.message }));
  });
}

function formatAddress(address) {
  if (address && typeof address === 'object') {
    return address.family === 'IPv6' || address.address.includes(':')
      ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
  }
  return String(address);
}

function passedSocketFd(environ) {
  if ((environ.LISTEN_PID || '') !== String(process.pid)) return null;
  const count = Number.parseInt(environ.LISTEN_FDS || '0', 10);
  if (!(count >= 1)) return null;
  if (count > 1) logError(`LISTEN_FDS=${count}: serving the first socket (fd ${SD_LISTEN_FDS_START}) only`);
  return SD_LISTEN_FDS_START;
}

class App {
  constructor(config) {
    this.config = config;
    this.startedWall = new Date();
    this.started = Date.now();
    this.readyAt = this.started + config.startupDelay * 1000;
    this.ready = false;
    this.draining = false;
    this.drainDeadline = null;
    this.inFlight = 0;
    this.requestsTotal = 0;
    this.fresh = new Set();
    this.balloons = [];
    this.server = null;
    this.socketActivated = false;
    this.listenAddress = null;
    this.loopLagMs = 0;
    this.lastTick = Date.now();
  }

  // --- state ---------------------------------------------------------------
  livenessOk() {
    return this.config.healthStatus >= 200 && this.config.healthStatus < 300;
  }

  async checks() {
    const cfg = this.config;
    const now = Date.now();
    return {
      startup: {
        status: this.ready ? 'pass' : 'fail',
        remaining_s: this.ready ? 0 : Math.max(0, (this.readyAt - now) / 1000),
      },
      shutdown: { status: this.draining ? 'fail' : 'pass', draining: this.draining },
      liveness: { status: this.livenessOk() ? 'pass' : 'fail', http_status: cfg.healthStatus },
      event_loop: { status: 'pass', lag_ms: this.loopLagMs },
      database: await checkDatabase(cfg.databaseUrl, cfg.dbTimeout),
    };
  }

  overall(checks) {
    if (this.draining) return 'draining';
    if (!this.ready) return 'starting';
    if (checks.liveness.status !== 'pass') return 'unhealthy';
    if (checks.database.status === 'fail') return 'degraded';
    return 'healthy';
  }

  balloonMb() {
    return Math.floor(this.balloons.reduce((total, chunk) => total + chunk.length, 0) / MIB);
  }

  inflate(mb) {
    if (mb > 0) this.balloons.push(Buffer.alloc(mb * MIB, 0x5a)); // written, so really resident
  }

  // --- endpoints -------------------------------------------------------------
  async route(path, query) {
    const cfg = this.config;
    // With a passed socket the instance stopped accepting: what it accepted before is served normally.
    if (this.draining && !this.socketActivated && !PROBE_PATHS.has(path)) {
      return [503, { status: 'draining', error: 'shutting down', service: cfg.name }, { 'Retry-After': '1' }];
    }
    switch (path) {
      case '/':
        return [200, { message: `Hello from ${cfg.name}`, service: cfg.name, version: cfg.version, runtime: 'node' }];
      case '/health':
        return this.health();
      case '/ready':
        return this.readiness();
      case '/status':
        return [200, await this.status()];
      case '/db': {
        const result = await checkDatabase(cfg.databaseUrl, cfg.dbTimeout);
        return [result.status === 'fail' ? 503 : 200, result];
      }
      default:
        if (cfg.debug && path.startsWith('/debug/')) {
          try {
            return await this.debug(path, query);
          } catch (err) {
            return [400, { error: err.message }];
          }
        }
        return [404, { error: 'not found', path }];
    }
  }

  async health() {
    const cfg = this.config;
    if (cfg.healthHang > 0) await sleep(cfg.healthHang);
    return [cfg.healthStatus, { status: this.livenessOk() ? 'healthy' : 'unhealthy', service: cfg.name, version: cfg.version }];
  }

  async readiness() {
    const cfg = this.config;
    if (cfg.healthHang > 0) await sleep(cfg.healthHang);
    const checks = await this.checks();
    let state = 'ready';
    if (this.draining) state = 'draining';
    else if (!this.ready) state = 'starting';
    else if (Object.values(checks).some((check) => check.status === 'fail')) state = 'not_ready';
    return [state === 'ready' ? 200 : 503, { status: state, service: cfg.name, version: cfg.version, checks }];
  }

  async status() {
    const cfg = this.config;
    const checks = await this.checks();
    const memory = process.memoryUsage();
    const cpu = process.cpuUsage();
    return {
      status: this.overall(checks),
      service: cfg.name,
      version: cfg.version,
      uptime: Math.round(Date.now() - this.started) / 1000,
      timestamp: new Date().toISOString(),
      started_at: this.startedWall.toISOString(),
      ready: this.ready,
      pid: process.pid,
      hostname: os.hostname(),
      runtime: { language: 'node', version: process.versions.node },
      listen: { address: this.listenAddress, socket_activated: this.socketActivated },
      requests: { total: this.requestsTotal, in_flight: this.inFlight },
      resources: {
        memory_rss_bytes: memory.rss,
        heap_used_bytes: memory.heapUsed,
        cpu_user_seconds: cpu.user / 1e6,
        cpu_system_seconds: cpu.system / 1e6,
        balloon_mb: this.balloonMb(),
      },
      watchdog: { enabled: false, interval_s: null, note: 'use the prodready watchdog helper' },
      checks,
    };
  }

  async debug(path, query) {
    const number = (key, fallback, max) => {
      const raw = query.get(key);
      const value = raw === null ? fallback : Number(raw);
      if (!Number.isFinite(value) || value < 0 || value > max) throw new Error(`${key} must be between 0 and ${max}`);
      return value;
    };
    switch (path) {
      case '/debug/slow': {
        const seconds = number('s', 1, 600);
        await sleep(seconds);
        return [200, { status: 'ok', slept_s: seconds }];
      }
      case '/debug/balloon': {
        const mb = Math.floor(number('mb', 64, 1 << 20));
        try {
          this.inflate(mb);
        } catch (err) {
          return [507, { error: err.message, balloon_mb: this.balloonMb() }];
        }
        return [200, { status: 'ok', balloon_mb: this.balloonMb() }];
      }
      case '/debug/freeze': {
        // Block the event loop after answering: the app hangs the way a stuck
        // Node process does, so /health stops answering.
        const seconds = number('s', 5, 3600);
        setTimeout(() => {
          const until = Date.now() + seconds * 1000;
          while (Date.now() < until) { /* busy: the event loop is wedged */ }
        }, 50);
        return [200, { status: 'ok', frozen_s: seconds }];
      }
      case '/debug/write': {
        // Sandbox tests: try to write a file as this process; a written file
        // is left in place. EROFS: read-only path, ENOENT: hidden path.
        const target = query.get('path') || '';
        if (!target.startsWith('/')) return [200, { path: target, written: false, error: 'EINVAL', detail: 'path must be absolute' }];
        try {
          fs.writeFileSync(target, `written by ${process.pid}\n`);
        } catch (err) {
          return [200, { path: target, written: false, error: err.code || String(err), detail: err.message }];
        }
        return [200, { path: target, written: true, error: null }];
      }
      case '/debug/exit': {
        const code = Math.floor(number('code', 1, 255));
        setTimeout(() => process.exit(code), 100);
        return [200, { status: 'ok', exit_code: code }, { Connection: 'close' }];
      }
      default:
        return [404, { error: 'not found', path }];
    }
  }

  handle(req, res) {
    const started = process.hrtime.bigint();
    this.inFlight += 1;
    this.requestsTotal += 1;
    let finished = false;
    let size = 0;
    const finish = () => {
      if (finished) return;
      finished = true;
      this.inFlight -= 1;
      const ms = (Number(process.hrtime.bigint() - started) / 1e6).toFixed(1);
      const addr = req.socket.remoteAddress || 'unix';
      process.stdout.write(`${addr} - - [${new Date().toISOString()}] "${req.method} ${req.url} HTTP/${req.httpVersion}" `
        + `${res.statusCode} ${res.writableFinished ? size : '-'} ${ms}ms\n`);
    };
    res.once('finish', finish);
    res.once('close', finish);
    const send = (code, payload, headers = {}) => {
      const body = code === 204 || code === 304 ? '' : `${JSON.stringify(payload)}\n`;
      size = req.method === 'HEAD' ? 0 : Buffer.byteLength(body);
      const all = {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        'Cache-Control': 'no-store',
        ...headers,
      };
      if (this.draining) all.Connection = 'close';
      res.writeHead(code, all);
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, { error: 'method not allowed' }, { Allow: 'GET, HEAD' });
      return;
    }
    const url = new URL(req.url, 'http://localhost');
    this.route(url.pathname, url.searchParams).then(
      ([code, payload, headers]) => send(code, payload, headers),
      (err) => {
        logError(`error handling ${req.method} ${req.url}: ${err.stack || err}`);
        send(500, { error: 'internal server error' }, { Connection: 'close' });
      },
    );
  }

  // --- lifecycle ---------------------------------------------------------------
  start() {
    const cfg = this.config;
    this.inflate(cfg.balloonMb);
    if (cfg.noListen) {
      logInfo('APP_NO_LISTEN=1: not opening any port, idling until stopped');
      this.idle = setInterval(() => {}, 1 << 30);
      return;
    }
    this.server = http.createServer((req, res) => {
      this.fresh.delete(req.socket);
      this.handle(req, res);
    });
    // Accepted, first request not read yet: the drain waits for these (socket activation).
    this.server.on('connection', (sock) => {
      this.fresh.add(sock);
      sock.once('close', () => this.fresh.delete(sock));
    });
    this.server.on('error', (err) => {
      logError(`cannot serve: ${err.message}`);
      process.exit(1);
    });
    this.server.on('clientError', (err, sock) => {
      if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
    const fd = passedSocketFd(process.env);
    const listening = () => {
      this.listenAddress = formatAddress(this.server.address());
      logInfo(`${cfg.name} ${cfg.version} listening on ${this.listenAddress} `
        + `(socket-activated: ${this.socketActivated ? 'yes' : 'no'}, startup delay ${cfg.startupDelay.toFixed(1)}s)`);
      setTimeout(() => {
        if (!this.draining) {
          this.ready = true;
          logInfo('ready');
        }
      }, Math.max(0, this.readyAt - Date.now()));
    };
    if (fd !== null) {
      for (const key of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) delete process.env[key];
      this.socketActivated = true;
      this.server.listen({ fd }, listening);
    } else {
      this.server.listen(cfg.port, cfg.host, 1024, listening);
    }
    this.lagTimer = setInterval(() => {
      const now = Date.now();
      this.loopLagMs = Math.max(0, now - this.lastTick - LAG_TICK_MS);
      this.lastTick = now;
    }, LAG_TICK_MS);
    this.lagTimer.unref();
  }

  reload() {
    const old = this.config;
    let next;
    try {
      next = loadConfig(process.env);
    } catch (err) {
      logError(`reload failed, keeping the running configuration: ${err.message}`);
      return;
    }
    if (next.host !== old.host || next.port !== old.port || next.noListen !== old.noListen) {
      logError('reload: APP_HOST/APP_PORT/APP_NO_LISTEN changes need a restart; ignored');
    }
    this.config = next;
    logInfo(`reloaded configuration (version ${old.version} -> ${next.version})`);
  }

  beginDrain(signal) {
    if (this.draining) return;
    this.draining = true;
    this.drainDeadline = Date.now() + this.config.drainTimeout * 1000;
    logInfo(`${signal}: draining ${this.inFlight} in-flight request(s), at most ${this.config.drainTimeout.toFixed(1)}s`);
    if (!this.server) {
      this.exit();
      return;
    }
    if (this.socketActivated) {
      // Leave new connections queued in the socket for the next instance; serve the accepted ones
      // (closing "idle" connections would drop those whose request is not read yet).
      this.server.close();
    } else if (typeof this.server.closeIdleConnections === 'function') {
      this.server.closeIdleConnections(); // Node 18.2+
    }
    const poll = setInterval(() => {
      const busy = this.inFlight > 0 || (this.socketActivated && this.fresh.size > 0);
      if (busy && Date.now() < this.drainDeadline) return;
      clearInterval(poll);
      this.exit();
    }, 50);
  }

  exit() {
    if (this.inFlight > 0) logError(`drain timeout: exiting with ${this.inFlight} request(s) still in flight`);
    if (this.server) {
      this.server.close();
      if (typeof this.server.closeAllConnections === 'function') this.server.closeAllConnections(); // Node 18.2+
    }
    logInfo('stopped');
    process.exit(0);
  }
}

function sleep(seconds) {
  return new Promise((resolve) => { setTimeout(resolve, seconds * 1000); });
}

function main() {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    logError(`configuration error: ${err.message}`);
    process.exit(2);
  }
  const app = new App(config);
  process.on('SIGTERM', () => app.beginDrain('SIGTERM'));
  process.on('SIGINT', () => app.beginDrain('SIGINT'));
  process.on('SIGHUP', () => app.reload());
  app.start();
}

if (require.main === module) {
  main();
}

module.exports = { parseEnvFile, loadConfig, dbTarget };
