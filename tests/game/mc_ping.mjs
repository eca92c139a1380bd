// Minecraft Java server list ping (minecraft-protocol's ping()).
//
//   node mc_ping.mjs --host H --port P [--server-name NAME] [--version 1.16.5]
//                    [--timeout SECONDS]
//
// Connects TCP to H:P but writes NAME (default H) as the server address in
// the handshake, as a client that resolved NAME to H would. Prints
//   {"motd": "...", "version": "1.16.5", "protocol": 754, "online": 0,
//    "max": 10, "favicon": false, "latency_ms": 3, "pong": true}
// latency_ms is null (and pong false) when the server answered the status
// request but closed or did not answer the ping.
import { emit, fail, setup, needPort, require, chatText, JAVA_VERSION } from './lib.mjs'
import net from 'node:net'

const { values } = setup({
  host: { type: 'string' },
  port: { type: 'string' },
  'server-name': { type: 'string' },
  version: { type: 'string' }
})
const host = values.host ?? fail('--host is required')
const port = needPort(values.port)
const name = values['server-name'] ?? host

const { ping } = require('minecraft-protocol')

let response = null
let done = false
function finish (data, pong) {
  if (done) return
  done = true
  emit({
    motd: chatText(data.description),
    version: data.version?.name ?? null,
    protocol: data.version?.protocol ?? null,
    online: data.players?.online ?? null,
    max: data.players?.max ?? null,
    favicon: typeof data.favicon === 'string' && data.favicon.length > 0,
    latency_ms: pong ? data.latency : null,
    pong
  })
  process.exit(0)
}

ping({
  // ping() writes options.host as the handshake's server address and
  // options.port as its port; connect() below picks the real target.
  host: name,
  port,
  version: values.version ?? JAVA_VERSION,
  closeTimeout: 120 * 1000, // our own --timeout bounds the run
  noPongTimeout: 3000,
  connect (client) {
    const socket = net.connect(port, host)
    client.once('server_info', (packet) => {
      try {
        response = JSON.parse(packet.response)
      } catch (e) {
        fail(`status response is not JSON: ${e.message}: ${packet.response}`)
      }
    })
    socket.on('error', (e) => fail(`${e.code || ''} ${e.message}`.trim()))
    socket.on('close', () => {
      // ping() itself would wait for its timeouts here.
      setTimeout(() => {
        if (done) return
        if (response) finish(response, false)
        else fail('connection closed before the status response')
      }, 20)
    })
    client.setSocket(socket)
  }
}).then((data) => finish(data, data.latency !== undefined), (e) => fail(e?.message || e))
