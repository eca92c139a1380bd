// A real Minecraft Java server (flying-squid) on 127.0.0.1:PORT, offline
// mode, superflat world kept in memory (nothing is written to disk).
//
//   node mc_server.mjs --port P [--motd TEXT] [--spawn X,Y,Z] [--pidfile FILE]
//                      [--max-players N] [--dir DIR] [--verbose] [--timeout SECONDS]
//
// Prints {"ready": P, "ms": startup} once it accepts players, then runs
// until killed. --timeout bounds the startup only. Every player spawns at
// --spawn (default: on the ground at 0.5,?,0.5), so a test can tell two
// servers apart by where its bot spawns.
import { emit, fail, setup, needPort, require, elapsedMs, JAVA_VERSION } from './lib.mjs'
import fs from 'node:fs'
import os from 'node:os'

const { values, disarm } = setup({
  port: { type: 'string' },
  motd: { type: 'string' },
  spawn: { type: 'string' },
  pidfile: { type: 'string' },
  'max-players': { type: 'string' },
  dir: { type: 'string' },
  verbose: { type: 'boolean' }
})

if (values.pidfile) fs.writeFileSync(values.pidfile, `${process.pid}\n`)
const port = needPort(values.port)
const maxPlayers = values['max-players'] === undefined ? 10 : Number(values['max-players'])
if (!Number.isInteger(maxPlayers) || maxPlayers < 0) fail(`bad --max-players ${values['max-players']}`)
let spawn = null
if (values.spawn !== undefined) {
  spawn = values.spawn.split(',').map(Number)
  if (spawn.length !== 3 || !spawn.every(Number.isFinite)) fail(`--spawn needs X,Y,Z, got ${values.spawn}`)
}

// The world lives in memory (no worldFolder) and logging to files is
// off; cwd is still moved out of the repo in case anything writes there.
process.chdir(values.dir ?? os.tmpdir())

const mcServer = require('flying-squid')
const { Vec3 } = require('vec3')
const defaults = require('flying-squid/config/default-settings.json')

const serv = mcServer.createMCServer({
  ...defaults,
  host: '127.0.0.1',
  port,
  motd: values.motd ?? 'ferry test server',
  'max-players': maxPlayers,
  'online-mode': false,
  logging: false,
  // Its log (one line per connection) goes to stderr only with --verbose:
  // a test that pipes stderr and never reads it would stall the server.
  noConsoleOutput: !values.verbose,
  // A debug function also stops flying-squid from installing its own
  // uncaughtException handler, which quits the server on any error;
  // lib.mjs logs those to stderr and keeps serving instead.
  debug: values.verbose ? (...args) => console.error(...args) : () => {},
  worldFolder: undefined,
  generation: { name: 'superflat', options: {} },
  'view-distance': 2,
  gameMode: 1,
  kickTimeout: 30000,
  plugins: {},
  'everybody-op': false,
  version: JAVA_VERSION
})

// flying-squid picks a random spawn near 0,0; pin it.
async function surface (world, x, z) {
  let y = 255
  while (y > 0 && (await world.getBlockType(new Vec3(x, y - 1, z))) === 0) y--
  return y
}
serv.getSpawnPoint = async (world) => {
  if (spawn) return new Vec3(spawn[0], spawn[1], spawn[2])
  return new Vec3(0.5, await surface(world, 0, 0), 0.5)
}

serv.on('error', (e) => fail(e?.message || e))
serv.once('ready', () => {
  disarm()
  emit({ ready: port, ms: elapsedMs() })
})

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0))
