"""Benchmark harness of the wallet service (issue 7): ``python -m wallet_bench``.

Every figure is measured side by side with its baseline in one run, on a broker the
harness starts itself (Apache Kafka, a KRaft node on loopback), and printed as a table with the
machine it ran on and the issue's targets. See docs/performance.md.
"""
