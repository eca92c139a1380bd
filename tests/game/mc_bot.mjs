// A real Minecraft Java player (mineflayer), offline mode.
//
//   node mc_bot.mjs --host H --port P --username U [--server-name NAME]
//                   [--version 1.16.5] [--stay SECONDS] [--timeout SECONDS]
//
// Connects TCP to H:P with NAME (default H) as the handshake's server
// address. Prints one line and exits:
//   {"spawned": [x, y, z], "ms": 812, "join_ms": 95}   joined (exit 0)
//   {"kicked": "reason as plain text", "logged_in": false}   (exit 0)
//   {"error": "..."}                                       (exit 1)
// ms counts from process start, join_ms from the TCP connect.
// With --stay S it plays for S seconds after spawning (jumps, walks a
// little, chats) and then prints
//   {"spawned": [...], "stayed": S, "ok": true, "keep_alives": n,
//    "chats_seen": n, "ms": ..., "join_ms": ...}
// A kick or disconnect during the stay prints {"kicked": ...} or
// {"error": ...} with "stayed_ms" telling how long it lasted.
// The default --timeout is 30 plus --stay.
import { emit, fail, setup, needPort, require, chatText, elapsedMs, JAVA_VERSION } from './lib.mjs'

const stayArg = process.argv.indexOf('--stay')
const stayGuess = stayArg > 0 ? Number(process.argv[stayArg + 1]) || 0 : 0
const { values } = setup({
  host: { type: 'string' },
  port: { type: 'string' },
  username: { type: 'string' },
  'server-name': { type: 'string' },
  version: { type: 'string' },
  stay: { type: 'string' }
}, 30 + stayGuess)
const host = values.host ?? fail('--host is required')
const port = needPort(values.port)
const username = values.username ?? fail('--username is required')
const stay = values.stay === undefined ? 0 : Number(values.stay)
if (!Number.isFinite(stay) || stay < 0) fail(`bad --stay ${values.stay}`)

const mineflayer = require('mineflayer')

const joinStart = Date.now()
const bot = mineflayer.createBot({
  host,
  port,
  // The handshake's server address; minecraft-protocol writes options.host
  // unless fakeHost is set.
  fakeHost: values['server-name'] ?? host,
  username,
  auth: 'offline',
  version: values.version ?? JAVA_VERSION,
  hideErrors: true,
  logErrors: false,
  respawn: true
})

let spawned = null
let spawnedAt = 0
let finished = false
let keepAlives = 0
let chatsSeen = 0

function finish (obj, code = 0) {
  if (finished) return
  finished = true
  emit(obj)
  try {
    bot.quit()
  } catch {}
  // Give the quit packet a moment, then leave whatever is still open.
  setTimeout(() => process.exit(code), 100)
}

const stayedMs = () => (spawned ? { spawned, stayed_ms: Date.now() - spawnedAt } : {})

bot._client.on('keep_alive', () => keepAlives++)

bot.on('kicked', (reason, loggedIn) => {
  finish({ kicked: chatText(reason), logged_in: loggedIn, ...stayedMs() })
})

bot.on('error', (e) => {
  finish({ error: `${e?.code ?? ''} ${e?.message ?? e}`.trim(), ...stayedMs() }, 1)
})

bot.on('end', (reason) => {
  const what = spawned ? 'connection ended during the stay' : 'connection ended before spawn'
  finish({ error: `${what}: ${reason}`, ...stayedMs() }, 1)
})

bot.on('messagestr', (message) => {
  if (message.includes('ferry-bot-chat')) chatsSeen++
})

bot.once('spawn', () => {
  const p = bot.entity.position
  spawned = [p.x, p.y, p.z]
  spawnedAt = Date.now()
  const timing = { ms: elapsedMs(), join_ms: spawnedAt - joinStart }
  if (stay === 0) {
    finish({ spawned, ...timing })
    return
  }
  // Play a little: jump, walk back and forth, chat now and then.
  let tick = 0
  const play = setInterval(() => {
    tick++
    try {
      bot.setControlState('jump', tick % 2 === 0)
      bot.setControlState(tick % 4 < 2 ? 'forward' : 'back', true)
      bot.setControlState(tick % 4 < 2 ? 'back' : 'forward', false)
      if (tick % 5 === 2) bot.chat(`ferry-bot-chat ${tick}`)
    } catch (e) {
      console.error('play:', e)
    }
  }, 1000)
  setTimeout(() => {
    clearInterval(play)
    bot.clearControlStates()
    finish({ spawned, stayed: stay, ok: true, keep_alives: keepAlives, chats_seen: chatsSeen, ...timing })
  }, stay * 1000)
})
