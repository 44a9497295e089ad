// Pays one MPP charge with the mppx npm client against the devnet and prints the outcome as
// one JSON line: node pay.mjs <url> <rpcUrl> <privateKey> [METHOD] [JSON body]
//
// mppx takes the chain id from the viem client, so the client is viem's Tempo localnet chain
// (id 1337, Tempo formatters and serializers) pointed at the devnet (mppx-peer.md §2.1).
import { createClient, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { tempoLocalnet } from 'viem/chains'
import { Mppx, tempo } from 'mppx/client'

const [url, rpcUrl, privateKey, method = 'GET', body] = process.argv.slice(2)
const chain = { ...tempoLocalnet, rpcUrls: { default: { http: [rpcUrl] } } }
const mppx = Mppx.create({
  polyfill: false,
  methods: [
    tempo.charge({
      account: privateKeyToAccount(privateKey),
      mode: 'pull',
      expectedChainId: chain.id,
      getClient: () => createClient({ chain, transport: http(rpcUrl, { retryCount: 0 }) }),
    }),
  ],
})

try {
  const init = body === undefined
    ? { method }
    : { method, body, headers: { 'content-type': 'application/json' } }
  const response = await mppx.fetch(url, init)
  console.log(JSON.stringify({
    status: response.status,
    receipt: response.headers.get('payment-receipt'),
    body: await response.text(),
  }))
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.shortMessage ?? error?.message ?? error) }))
  process.exitCode = 1
}
