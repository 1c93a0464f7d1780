"""The wallet API: emitter of deposits and reader of the two views over HTTP."""
