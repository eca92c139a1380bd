// Minecraft Bedrock server ping: RakNet unconnected ping (0x01) and pong
// (0x1c), with bedrock-protocol's pure-JS RakNet (jsp-raknet) and its
// advertisement parser.
//
//   node bedrock_ping.mjs --host H --port P [--interval SECONDS] [--timeout SECONDS]
//
// Resends the ping every --interval (default 1 s) until a pong comes.
// Prints
//   {"motd": "...", "level": "...", "protocol": 786, "version": "1.21.70",
//    "online": 0, "max": 3, "server_id": "...", "gamemode": "Creative",
//    "port_v4": 19132, "port_v6": 19132, "server_guid": "...",
//    "raw": "MCPE;...", "latency_ms": 2, "attempts": 1}
//
// bedrock-protocol's own ping() is not used: it always loads the native
// RakNet (raknet-native), which has no prebuilt binary for this kernel
// and cannot be built offline; this is the same ping over jsp-raknet.
import { emit, fail, setup, needPort, require } from './lib.mjs'

const { values, timeout } = setup({
  host: { type: 'string' },
  port: { type: 'string' },
  interval: { type: 'string' }
}, 30, () => `no pong after ${attempts} pings in ${timeout} s`)
const host = values.host ?? fail('--host is required')
const port = needPort(values.port)
const interval = values.interval === undefined ? 1000 : Number(values.interval) * 1000

const { Client } = require('jsp-raknet')
const { fromServerName } = require('bedrock-protocol/src/server/advertisement.js')

const client = new Client(host, port)
client.socket.on('error', (e) => fail(`${e.code || ''} ${e.message}`.trim()))
let attempts = 0
let sentAt = 0
function send () {
  attempts++
  sentAt = Date.now()
  client.sendUnconnectedPing()
}

client.on('unconnectedPong', (serverName, serverGuid) => {
  const latency = Date.now() - sentAt
  const raw = String(serverName)
  if (!raw.startsWith('MCPE;') && !raw.startsWith('MCEE;')) fail(`pong is not a Bedrock advertisement: ${JSON.stringify(raw)}`)
  const ad = fromServerName(raw)
  const text = (v) => (v === undefined || v === null || v === '' ? null : String(v))
  const num = (v) => (v === undefined || v === null || v === '' || Number.isNaN(Number(v)) ? null : Number(v))
  emit({
    motd: text(ad.motd),
    level: text(ad.levelName),
    protocol: num(ad.protocol),
    version: text(ad.version),
    online: num(ad.playersOnline),
    max: num(ad.playersMax),
    server_id: text(ad.serverId),
    gamemode: text(ad.gamemode),
    port_v4: num(ad.portV4),
    port_v6: num(ad.portV6),
    server_guid: BigInt.asUintN(64, BigInt(serverGuid)).toString(),
    raw,
    latency_ms: latency,
    attempts
  })
  process.exit(0)
})

send()
setInterval(send, interval)
