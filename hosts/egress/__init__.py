"""What sandboxes may reach beyond the host, and where their secrets may go (docs/network.md,
"Egress" and "Secrets"): nft sets per sandbox address, hostd's resolver, the SNI/Host egress
proxy and the per-sandbox CA it terminates TLS with."""
