"""Development only: the embedded Kafka-protocol broker and the local stack.

Used by ``wallet-stack`` (``make run``) and by the tests; never by the services.
"""
