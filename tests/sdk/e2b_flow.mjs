// The official E2B JavaScript SDK (`e2b`, pinned in js/package.json), unmodified, under Node 20:
// the groups of steps named on the command line, each on a sandbox of its own; prints a JSON
// report shaped like flow_report.py's ({steps, ms}: each step's outcome or the error it met).
//
// Run by test_e2b_sdk.py; the SDK is configured as a user would (E2B_API_URL,
// E2B_SANDBOX_URL, E2B_API_KEY). DNAH_NPM_PREFIX names the directory install.sh put
// node_modules in (outside the repo); DNAH_FLOW_RUN is a word unique to the run (metadata).
import { request } from 'node:http'
import { createRequire } from 'node:module'

const require = createRequire(`${process.env.DNAH_NPM_PREFIX}/package.json`)
const { Sandbox, CommandExitError } = require('e2b')

const run = process.env.DNAH_FLOW_RUN
const steps = {}
const ms = {}
const SERVER_PORT = 8000
const SITE = '/tmp/e2b-site'

async function step(name, call, shown = (value) => value) {
  const started = performance.now()
  try {
    const result = await call()
    steps[name] = result === undefined ? null : shown(result)
    return result
  } catch (err) {
    steps[name] = { error: `${err?.constructor?.name ?? 'Error'}: ${err?.message ?? err}`.slice(0, 600) }
    return undefined
  } finally {
    ms[name] = Math.round((performance.now() - started) * 10) / 10
  }
}

async function waitFor(condition, what, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const result = await condition()
    if (result) return result
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for ${what}; last saw ${JSON.stringify(result)}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function commands(sbx) {
  const cmd = sbx.commands
  await step('env_from_create', async () => (await cmd.run('echo $FROM_CREATE')).stdout)
  await step('run', async () => {
    const done = await cmd.run('echo hi; echo err >&2')
    return { stdout: done.stdout, stderr: done.stderr, exit_code: done.exitCode }
  })
  await step('run_nonzero', async () => {
    try {
      await cmd.run('echo out; echo bad >&2; exit 3')
    } catch (err) {
      if (!(err instanceof CommandExitError)) throw err
      return { raised: true, exit_code: err.exitCode, stdout: err.stdout, stderr: err.stderr }
    }
    return { raised: false }
  })
  await step('run_on_stdout', async () => {
    // "second" is printed only if /tmp/go appears, which onStdout writes on seeing "first".
    const chunks = []
    const writes = []
    const done = await cmd.run(
      'rm -f /tmp/go; echo first; for i in $(seq 300); do [ -e /tmp/go ] && break; sleep 0.1; done;' +
        ' [ -e /tmp/go ] && echo second || echo late',
      {
        onStdout: (text) => {
          chunks.push(text)
          if (text.includes('first')) writes.push(sbx.files.write('/tmp/go', ''))
        },
      },
    )
    await Promise.all(writes)
    return { stdout: done.stdout, streamed: chunks.join('') }
  })
  await step('run_cwd_envs', async () => (await cmd.run('pwd; echo $A$B', { cwd: '/tmp', envs: { A: '1', B: '2' } })).stdout)
  await step('run_timeout', async () => {
    try {
      await cmd.run('sleep 30', { timeoutMs: 1000 })
    } catch (err) {
      return { raised: err.constructor.name }
    }
    return { raised: null }
  })
  await step('background_kill_list', async () => {
    const handle = await cmd.run('sleep 300', { background: true, timeoutMs: 0 })
    const mine = (await cmd.list()).find((p) => p.pid === handle.pid)
    const killed = await handle.kill()
    await waitFor(async () => !(await cmd.list()).some((p) => p.pid === handle.pid), 'the killed command to leave the list')
    return {
      listed: mine !== undefined,
      cmd: mine ? [mine.cmd, mine.args] : null,
      killed,
      kill_again: await cmd.kill(handle.pid),
    }
  })
  await step('send_stdin', async () => {
    const handle = await cmd.run('read line; echo got:$line', { background: true, stdin: true })
    await cmd.sendStdin(handle.pid, 'hello\n')
    return { stdout: (await handle.wait()).stdout }
  })
  await step('run_as_root', async () => (await cmd.run('id -un; pwd; echo $HOME', { user: 'root' })).stdout)
  await step('root_background_kill', async () => {
    // slee[p]: the pattern does not match the pgrep's own shell
    const handle = await cmd.run('sleep 301', { background: true, user: 'root', timeoutMs: 0 })
    const killed = await handle.kill()
    await waitFor(async () => (await cmd.run("pgrep -f 'slee[p] 301' || true")).stdout === '', 'the root command to be gone')
    return { killed, gone: true }
  })
}

async function files(sbx) {
  const fs = sbx.files
  await step('files_write_read', async () => {
    const wrote = await fs.write('/tmp/e2b/dir/a.txt', 'alpha\n')
    await fs.write('/tmp/e2b/dir/b.bin', new Uint8Array([0, 1, 255]).buffer)
    return {
      wrote: [wrote.name, wrote.path],
      text: await fs.read('/tmp/e2b/dir/a.txt'),
      bytes: Array.from(await fs.read('/tmp/e2b/dir/b.bin', { format: 'bytes' })),
    }
  })
  await step('files_list', async () =>
    (await fs.list('/tmp/e2b/dir')).map((e) => [e.name, e.type ?? null, e.size]).sort(),
  )
  await step('files_exists', async () => [await fs.exists('/tmp/e2b/dir/a.txt'), await fs.exists('/tmp/e2b/dir/nope')])
  await step('files_make_dir', async () => [await fs.makeDir('/tmp/e2b/made/deep'), await fs.makeDir('/tmp/e2b/made/deep')])
  await step('files_rename_remove', async () => {
    const moved = await fs.rename('/tmp/e2b/dir/a.txt', '/tmp/e2b/dir/c.txt')
    await fs.remove('/tmp/e2b/dir/c.txt')
    return { moved: moved.path, after: [await fs.exists('/tmp/e2b/dir/a.txt'), await fs.exists('/tmp/e2b/dir/c.txt')] }
  })
  await step('files_read_missing', async () => {
    try {
      await fs.read('/tmp/e2b/nope.txt')
    } catch (err) {
      return err.constructor.name
    }
    return 'no error'
  })
  await step('files_write_files_get_info', async () => {
    const wrote = await fs.writeFiles([
      { path: '/tmp/e2b/many/1.txt', data: 'one' },
      { path: '/tmp/e2b/many/2.txt', data: 'two' },
    ])
    const info = await fs.getInfo('/tmp/e2b/many/2.txt')
    return { paths: wrote.map((w) => w.path), info: [info.name, info.type ?? null, info.size] }
  })
}

async function watch(sbx) {
  const fs = sbx.files
  await step('files_watch_dir', async () => {
    await fs.makeDir('/tmp/e2b/watched')
    const seen = []
    const handle = await fs.watchDir('/tmp/e2b/watched', (event) => {
      seen.push([event.name, event.type])
    })
    await fs.write('/tmp/e2b/watched/new.txt', 'x')
    const created = () => seen.some(([name, type]) => name === 'new.txt' && type === 'create')
    await waitFor(created, 'a create event for new.txt')
    await handle.stop()
    // A write event may follow the create, now or later: only the create is certain.
    return [['new.txt', 'create']].filter(created)
  })
}

async function pty(sbx) {
  await step('pty', async () => {
    let text = ''
    const decoder = new TextDecoder()
    const handle = await sbx.pty.create({ rows: 24, cols: 80, timeoutMs: 120_000, onData: (d) => (text += decoder.decode(d)) })
    const encode = (s) => new TextEncoder().encode(s)
    await sbx.pty.sendInput(handle.pid, encode('echo A-$((1+1)); stty size; echo B-$((2+2))\n'))
    await waitFor(() => text.includes('B-4'), 'the PTY to answer')
    const first = text
    await sbx.pty.resize(handle.pid, { rows: 30, cols: 100 })
    await sbx.pty.sendInput(handle.pid, encode('stty size; echo C-$((3+3))\n'))
    await waitFor(() => text.includes('C-6'), 'the PTY to answer after the resize')
    const second = text.slice(first.length)
    const killed = await sbx.pty.kill(handle.pid)
    await waitFor(async () => !(await sbx.commands.list()).some((p) => p.pid === handle.pid), 'the killed PTY to leave the list')
    return { first_size: first.includes('24 80'), resized: second.includes('30 100'), killed, kill_again: await sbx.pty.kill(handle.pid) }
  })
}

async function ports(sbx) {
  await step('port_by_headers', async () => {
    await sbx.files.write(`${SITE}/hello.txt`, 'hello from the sandbox\n')
    await sbx.commands.run(`python3 -m http.server ${SERVER_PORT} --directory ${SITE}`, { background: true, timeoutMs: 0 })
    const url = `${process.env.E2B_SANDBOX_URL.replace(/\/$/, '')}/hello.txt`
    const headers = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': String(SERVER_PORT) }
    const got = await waitFor(async () => {
      const r = await fetch(url, { headers })
      return r.status === 200 && r
    }, 'the server in the sandbox to answer')
    return { status: got.status, body: await got.text() }
  })
  if (process.env.DNAH_HOST_PROXY) {
    // No wildcard DNS here: the request goes where DNS would send it, the host in its Host header.
    await step('get_host', async () => {
      const host = sbx.getHost(SERVER_PORT)
      const proxy = new URL(process.env.DNAH_HOST_PROXY)
      const got = await waitFor(async () => {
        const answer = await get(proxy, '/hello.txt', host)
        return answer.status === 200 && answer
      }, `the server in the sandbox to answer at ${host}`)
      return { host: host === `${SERVER_PORT}-${sbx.sandboxId}.${process.env.E2B_DOMAIN}`, body: got.body }
    })
  }
}

function get(proxy, path, host) {
  return new Promise((resolve, reject) => {
    const req = request({ hostname: proxy.hostname, port: proxy.port, path, headers: { host } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

async function lifecycle(sbx) {
  await step('list_by_metadata', async () => {
    const mine = await Sandbox.list({ query: { metadata: { run, group: 'lifecycle' } } }).nextItems()
    const none = await Sandbox.list({ query: { metadata: { run, group: 'nobody' } } }).nextItems()
    return { ids: mine.map((s) => s.sandboxId === sbx.sandboxId), metadata: mine.map((s) => s.metadata), none: none.length }
  })
  await step('set_timeout', async () => {
    const short = await Sandbox.create({ metadata: { run, group: 'short' }, timeoutMs: 600_000 })
    await short.setTimeout(3000)
    await waitFor(
      async () => !(await Sandbox.list({ query: { metadata: { run } } }).nextItems()).some((s) => s.sandboxId === short.sandboxId),
      'the sandbox to be killed at its deadline',
      120_000,
    )
    return { killed_at_deadline: true, kill_after: await Sandbox.kill(short.sandboxId) }
  })
  await step('kill', async () => {
    const killed = await sbx.kill()
    let after = 'still there'
    try {
      await sbx.getInfo()
    } catch (err) {
      after = err.constructor.name
    }
    return { killed, kill_again: await Sandbox.kill(sbx.sandboxId), info_after: after }
  })
}

async function pause(sbx) {
  await step('pause_connect', async () => {
    await sbx.files.write('/tmp/e2b/kept.txt', 'kept\n')
    const sleeper = await sbx.commands.run('sleep 900', { background: true, timeoutMs: 0 })
    const paused = await sbx.pause()
    const state = (await sbx.getInfo()).state
    const again = await Sandbox.connect(sbx.sandboxId)
    return {
      paused,
      state,
      file: await again.files.read('/tmp/e2b/kept.txt'),
      process: (await again.commands.list()).some((p) => p.pid === sleeper.pid),
      runs: (await again.commands.run('echo back')).stdout,
      state_after: (await again.getInfo()).state,
    }
  })
}

const GROUPS = { commands, files, watch, pty, ports, lifecycle, pause }

for (const group of process.argv.slice(2)) {
  const sbx = await step('create', () =>
    Sandbox.create({ metadata: { run, group }, envs: { FROM_CREATE: 'yes' }, timeoutMs: 600_000 }),
    () => ({ created: true }),
  )
  if (sbx === undefined) continue
  try {
    await step('info', async () => {
      const got = await sbx.getInfo()
      return { metadata: got.metadata, state: got.state, same_id: got.sandboxId === sbx.sandboxId }
    })
    await GROUPS[group](sbx)
  } finally {
    if (group !== 'lifecycle') await step('cleanup', () => sbx.kill())
  }
}
process.stdout.write(JSON.stringify({ steps, ms }))
