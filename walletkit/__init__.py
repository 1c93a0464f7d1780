"""Shared toolkit of the wallet services.

- ``walletkit.stream``: a domain-free, Goka-style stream toolkit on confluent-kafka
  and RocksDB (emitter, processor, view, topic manager).
- ``walletkit.wallet``: the wallet's messages (generated from proto/), exact money
  and the codecs of the wallet topics.
- ``walletkit.service``: process plumbing shared by the three services (settings,
  logging, the operations HTTP server, signal handling).
- ``walletkit.devstack``: the embedded broker and the local stack (development only).
"""
