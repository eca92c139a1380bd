// A Minecraft Bedrock server (bedrock-protocol's Server over its pure-JS
// RakNet, jsp-raknet) on 127.0.0.1:PORT, offline mode. It answers
// unconnected pings with an advertisement carrying --motd, and accepts
// RakNet connections (bedrock-protocol handles the login).
//
//   node bedrock_server.mjs --port P --motd TEXT [--level NAME]
//                           [--max-players N] [--pidfile FILE] [--timeout SECONDS]
//
// Prints {"ready": P, "ms": startup, "version": "1.21.70", "protocol": 786}
// once bound, then runs until killed. --timeout bounds the startup only.
import { emit, fail, setup, needPort, require, elapsedMs, BEDROCK_VERSION } from './lib.mjs'
import fs from 'node:fs'
import os from 'node:os'

const { values, disarm } = setup({
  port: { type: 'string' },
  motd: { type: 'string' },
  level: { type: 'string' },
  'max-players': { type: 'string' },
  pidfile: { type: 'string' }
})
if (values.pidfile) fs.writeFileSync(values.pidfile, `${process.pid}\n`)
const port = needPort(values.port)
const motd = values.motd ?? fail('--motd is required')
const maxPlayers = values['max-players'] === undefined ? 10 : Number(values['max-players'])
if (!Number.isInteger(maxPlayers) || maxPlayers < 0) fail(`bad --max-players ${values['max-players']}`)
process.chdir(os.tmpdir())

// Not require('bedrock-protocol'): its index loads the native RakNet,
// which does not load here (see bedrock_ping.mjs).
const { Server } = require('bedrock-protocol/src/server.js')

const server = new Server({
  host: '127.0.0.1',
  port,
  version: BEDROCK_VERSION,
  offline: true,
  raknetBackend: 'jsp-raknet',
  maxPlayers,
  motd: { motd, levelName: values.level ?? 'ferry' }
})
server.advertisement.playersMax = maxPlayers

let badDatagrams = 0
server.listen().then(() => {
  // jsp-raknet throws out of its socket handler on a malformed datagram
  // (empty, short, bad magic), which would kill the process: a flood of
  // junk must not take the test server down, so count and drop those.
  const rak = server.raknet.raknet
  const handle = rak.handle.bind(rak)
  rak.handle = (buffer, sender) => {
    try {
      handle(buffer, sender)
    } catch (e) {
      if (badDatagrams++ < 5) console.error('dropped bad datagram:', e.message)
    }
  }
  disarm()
  emit({ ready: port, ms: elapsedMs(), version: BEDROCK_VERSION, protocol: server.options.protocolVersion })
}, (e) => fail(`${e.code || ''} ${e.message}`.trim()))

server.on('connect', (client) => {
  client.on('join', () => console.error('bedrock player joined'))
})

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0))
