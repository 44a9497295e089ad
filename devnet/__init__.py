"""dnah-devnet: a local, deliberately small stand-in for the Tempo chain, for development and
tests. It is not a Tempo node and runs no EVM.

What it does for real: it accepts signed Tempo (type ``0x76``) transactions, checks them the
way a Tempo node does (chain id, secp256k1 sender and fee payer signatures, 2D and expiring
nonces, ``validBefore``/``validAfter``, fee-token balance), executes TIP-20 ``transfer`` and
``transferWithMemo`` on pathUSD and USDC.e at their real addresses, charges fees in the fee
token by Tempo's formula, mines one block per transaction, and returns receipts whose logs
are exactly what Tempo's TIP-20 precompile emits. That is what pympp and mppx need to pay and
be paid end to end without a public chain.

Modules: ``tx`` decodes and authenticates transactions, ``tip20`` is the token precompile,
``chain`` admits/executes/mines, ``state`` keeps it (in memory or SQLite), ``rpc`` is the
JSON-RPC surface, ``render`` its JSON shapes, ``server`` the HTTP app, ``cli`` the command.
See ``docs/devnet.md``.
"""
