"""Print tests and seconds per suite (tests/<suite>/), and the slowest tests, from pytest's JUnit XML report."""

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

counts: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
skipped = 0
slowest: list[tuple[float, str]] = []
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    slowest.append((float(case.get("time", 0) or 0), f"{case.get('classname', '')}::{case.get('name', '')}"))
    parts = case.get("classname", "").split(".")
    suite = parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0] or "?"
    entry = counts[suite]
    entry[0] += 1
    entry[1] += float(case.get("time", 0) or 0)
    entry[2] += any(child.tag in ("failure", "error") for child in case)
    skipped += any(child.tag == "skipped" for child in case)
print("== tests and time per suite (setup, call and teardown)")
for suite, (n, seconds, failed) in sorted(counts.items(), key=lambda kv: -kv[1][1]):
    print(f"   {suite:14s} {n:5d} tests {seconds:7.0f} s" + (f"  ({failed} failed)" if failed else ""))
total = sum(int(n) for n, _s, _f in counts.values())
failed = sum(int(f) for _n, _s, f in counts.values())
print("== the ten slowest tests")
for seconds, name in sorted(slowest, reverse=True)[:10]:
    print(f"   {seconds:6.0f} s  {name}")
print(f"suites: {total - failed - skipped} passed, {failed} failed, {skipped} skipped")
