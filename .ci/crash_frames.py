"""Print the crashing thread's frames from a faulthandler dump, innermost first.

A crash in a thread Python does not know (a C library's own thread) has no "Current thread"
block; then every Python thread is printed, briefly, since one of them called into it.
"""

import sys

text = open(sys.argv[1], errors="replace").read()
blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
print(blocks[0].splitlines()[0] if blocks else "(empty dump)")
current = [b for b in blocks if b.startswith("Current thread")]
for block in current or [b for b in blocks if b.startswith("Thread ")][:6]:
    print("\n".join(block.splitlines()[: 10 if current else 5]))
