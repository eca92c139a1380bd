// Shared helpers for the game scripts: argument parsing, the overall
// timeout, one-line JSON results on stdout, and chat text flattening.
//
// Import this module first: it sends everything else written to stdout
// to stderr, so that stdout carries nothing but the JSON result lines
// (the libraries log with console.log, and flying-squid even opens a
// readline prompt on process.stdout).
import { parseArgs } from 'node:util'
import { createRequire } from 'node:module'

const realStdout = process.stdout
Object.defineProperty(process, 'stdout', {
  configurable: true,
  enumerable: true,
  get: () => process.stderr
})
for (const level of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[level] = (...args) => console.error(...args)
}

export const require = createRequire(import.meta.url)

// The one Minecraft Java version every script speaks (flying-squid,
// minecraft-protocol and mineflayer all support it).
export const JAVA_VERSION = '1.16.5'
// The Bedrock version bedrock_server.mjs advertises; it must be in the
// pinned minecraft-data.
export const BEDROCK_VERSION = '1.21.70'

/** Milliseconds since this process started. */
export function elapsedMs () {
  return Math.round(process.uptime() * 1000)
}

/** Writes one JSON line to stdout (synchronous for pipes and files). */
export function emit (obj) {
  realStdout.write(JSON.stringify(obj) + '\n')
}

/** Prints {"error": message} and exits non-zero. */
export function fail (message) {
  emit({ error: String(message) })
  process.exit(1)
}

/**
 * Parses --name value options (plus --timeout SECONDS) and arms the
 * overall timeout (timeoutMessage() may word its error). Returns
 * { values, timeout, disarm } where disarm() cancels the timeout
 * (servers call it once they are ready).
 */
export function setup (options, defaultTimeout = 30, timeoutMessage = null) {
  // Let a negative number follow its option (--spawn -200,20,300), which
  // parseArgs would take for an option of its own.
  const args = []
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--') && !argv[i].includes('=') && /^-[\d.]/.test(argv[i + 1] ?? '')) {
      args.push(`${argv[i]}=${argv[++i]}`)
    } else {
      args.push(argv[i])
    }
  }
  let values
  try {
    ({ values } = parseArgs({
      args,
      options: { ...options, timeout: { type: 'string' } },
      strict: true,
      allowPositionals: false
    }))
  } catch (e) {
    fail(e.message)
  }
  const timeout = values.timeout === undefined ? defaultTimeout : Number(values.timeout)
  if (!Number.isFinite(timeout) || timeout <= 0) fail(`bad --timeout ${values.timeout}`)
  const timer = setTimeout(() => fail(timeoutMessage?.() ?? `timeout after ${timeout} s`), timeout * 1000)
  // Before disarm() any stray error is the result: {"error"} and exit 1.
  // After it (a server that is up) it is only logged to stderr, so that
  // one bad connection cannot take the server down under a test.
  let up = false
  const onError = (e) => {
    if (!up) fail(e?.stack || e)
    console.error('uncaught:', e?.stack || e)
  }
  process.on('uncaughtException', onError)
  process.on('unhandledRejection', onError)
  const disarm = () => {
    up = true
    clearTimeout(timer)
  }
  return { values, timeout, disarm }
}

export function needPort (value, name = '--port') {
  const port = Number(value)
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`${name} needs a port number, got ${value}`)
  return port
}

/**
 * Plain text of a Minecraft chat component: a JSON string, an object
 * ({text, extra, translate, with}) or an array of them. Formatting codes
 * (section sign + character) are removed.
 */
export function chatText (component) {
  if (component === undefined || component === null) return ''
  if (typeof component === 'string') {
    const s = component.trim()
    if (s.startsWith('{') || s.startsWith('[') || s.startsWith('"')) {
      try {
        return chatText(JSON.parse(s))
      } catch {}
    }
    return stripCodes(component)
  }
  if (Array.isArray(component)) return component.map(chatText).join('')
  if (typeof component !== 'object') return String(component)
  // prismarine-nbt shaped values (newer versions send NBT text components)
  if ('type' in component && 'value' in component && Object.keys(component).length === 2) {
    return chatText(simplifyNbt(component))
  }
  let out = ''
  if (typeof component.text === 'string' || typeof component.text === 'number') out += component.text
  else if (component[''] !== undefined) out += component['']
  if (typeof component.translate === 'string') {
    const args = (component.with || []).map(chatText)
    let i = 0
    out += component.translate.replace(/%(\d+\$)?s/g, (_, n) => {
      const v = n ? args[parseInt(n) - 1] : args[i++]
      return v === undefined ? '' : v
    }).replace(/%%/g, '%')
  }
  if (Array.isArray(component.extra)) out += component.extra.map(chatText).join('')
  return stripCodes(out)
}

function stripCodes (s) {
  return String(s).replace(/\u00a7./g, '')
}

function simplifyNbt (tag) {
  switch (tag.type) {
    case 'compound': {
      const o = {}
      for (const [k, v] of Object.entries(tag.value)) o[k] = simplifyNbt(v)
      return o
    }
    case 'list':
      return tag.value.value.map((v) => simplifyNbt({ type: tag.value.type, value: v }))
    default:
      return tag.value
  }
}
