#!/usr/bin/env python3
"""Prints the codec benchmark as a Markdown table from criterion's saved estimates.

Usage: python3 benches/scripts/codec_table.py [target/criterion]
Reads the median of each `codec/*` benchmark and prints ns/packet, packets/s and the
mqttx/rumqttc speed ratios for decode and encode.
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"


def median_ns(group, bench):
    path = os.path.join(root, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except OSError:
        return None


def fmt_rate(per_s):
    if per_s >= 1e6:
        return f"{per_s / 1e6:.1f} M/s"
    return f"{per_s / 1e3:.0f} k/s"


groups = sorted(d for d in os.listdir(root) if d.startswith("codec_"))
rows = []
for g in groups:
    benches = {}
    for sub in ["decode_mqttx", "decode-owned_mqttx", "decode_rumqttc", "encode_mqttx",
                "encode_rumqttc", "encode-forward_mqttx", "encode-header_mqttx", "decoder-64k-reads_mqttx", "memcpy"]:
        benches[sub] = median_ns(g, sub)
    rows.append((g.replace("codec_", ""), benches))

print("| case | decode mqttx | decode mqttx (owned) | decode rumqttc | decode ratio | "
      "encode mqttx | encode rumqttc | encode ratio | encode mqttx (forward) | forward ratio | "
      "encode header only | memcpy |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, b in rows:
    def ns(key):
        v = b.get(key)
        return "–" if v is None else f"{v:.1f} ns"

    def ratio(ours, theirs):
        o, t = b.get(ours), b.get(theirs)
        return "–" if not o or not t else f"**{t / o:.1f}×**"

    print(f"| {name} | {ns('decode_mqttx')} | {ns('decode-owned_mqttx')} | "
          f"{ns('decode_rumqttc')} | {ratio('decode_mqttx', 'decode_rumqttc')} | "
          f"{ns('encode_mqttx')} | {ns('encode_rumqttc')} | "
          f"{ratio('encode_mqttx', 'encode_rumqttc')} | {ns('encode-forward_mqttx')} | "
          f"{ratio('encode-forward_mqttx', 'encode_rumqttc')} | {ns('encode-header_mqttx')} | "
          f"{ns('memcpy')} |")
