// The peer in `load/bench_payments.py --peer mppx`: mppx's own paid reverse proxy (`mppx/proxy`
// on `node:http`) charging for `POST /sandbox` exactly what dnah's shipped price table charges:
// $0.01 (10000 base units) of pathUSD on Tempo, chain id 1337, one fixed recipient and realm.
//
//   node server.mjs PORT [UPSTREAM_URL] [RPC_URL]
//
// Run it from the directory install.sh prints (the bench copies it there). It prints one line,
// `listening <port>`, once it accepts connections. Unpaid requests never reach UPSTREAM_URL,
// and issuing a 402 makes no JSON-RPC call, so neither needs to exist for the 402 benchmark.
//
// Node 20 has no global URLPattern, which mppx/proxy's router uses: without the polyfill every
// request is a 500 (mppx-peer.md §0.2).
import 'urlpattern-polyfill'
import { createServer } from 'node:http'
import { createClient, http } from 'viem'
import { tempo as tempoChain } from 'viem/tempo/chains'
import { Proxy, Service } from 'mppx/proxy'
import { Mppx, tempo } from 'mppx/server'

const [port = '8402', upstream = 'http://127.0.0.1:9', rpcUrl = 'http://127.0.0.1:8545'] =
  process.argv.slice(2)

const PATH_USD = '0x20c0000000000000000000000000000000000000'
const RECIPIENT = '0x742d35Cc6634c0532925a3b844bC9e7595F8fE00'
const REALM = 'dnah.bench'
const CHAIN_ID = 1337
// Benchmark-only HMAC key (mppx wants at least 32 bytes); it guards nothing.
const SECRET = Buffer.from('dnah-peer-benchmark-secret-not-for-use-anywhere!').toString('base64')

// mppx reads the chain id from the viem client it gets, not from `chainId` (§2.1): Tempo's
// formatters and serializers with id 1337 make the challenge advertise 1337.
const chain = { ...tempoChain, id: CHAIN_ID, rpcUrls: { default: { http: [rpcUrl] } } }
const getClient = () => createClient({ chain, transport: http(rpcUrl) })

const mppx = Mppx.create({
  methods: [tempo.charge({ currency: PATH_USD, recipient: RECIPIENT, chainId: CHAIN_ID, getClient })],
  secretKey: SECRET,
  realm: REALM,
})

// A service is mounted at /{id}/, so service "sandbox" with route "POST /" serves POST /sandbox.
const proxy = Proxy.create({
  services: [
    Service.from('sandbox', {
      baseUrl: upstream,
      routes: { 'POST /': mppx.charge({ amount: '0.01', description: 'Create a sandbox' }) },
    }),
  ],
})

const server = createServer(proxy.listener)
server.keepAliveTimeout = 60_000
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`)
})
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)))
}
