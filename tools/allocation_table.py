#!/usr/bin/env python3
"""Tables for docs/allocation.md from `lowbit allocate` and `lowbit quantize --plan` outputs.

  allocation_table.py proxy SENS.json
      How well alpha * proxy (alpha fitted on each tensor's cheapest candidate) predicts the measured KL
      of the other candidates: needs a sensitivity file made with --measure all.
  allocation_table.py rows FP_PPL NAME=PLAN.json:PPL.json ...
      One markdown row per plan: strategy, target, bits/weight, predicted KL (sum of single-tensor KL),
      measured KL of the whole plan on the calibration windows, perplexity, measured and predicted
      increase of the evaluation NLL (predicted: the summed KL, an estimate of the NLL increase).
  allocation_table.py single FP_PPL NAME=PPL.json ...
      The same columns for single-format files (no prediction).
"""
import json
import math
import sys


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    for k, i in enumerate(order):
        r[i] = float(k)
    return r


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    sa = math.sqrt(sum((x - ma) ** 2 for x in a))
    sb = math.sqrt(sum((y - mb) ** 2 for y in b))
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / (sa * sb)


def proxy(path):
    s = json.load(open(path))
    pred, meas, by_cand = [], [], {}
    for t in s["tensors"]:
        if t["layer"] < 0:
            continue
        ref = t["reference"]
        for k, e in enumerate(t["entries"]):
            if k == ref or e["measured_kl"] is None or e["proxy"] is None:
                continue
            p = t["alpha"] * e["proxy"]
            m = e["measured_kl"]
            if p > 0 and m > 0:
                pred.append(math.log(p))
                meas.append(math.log(m))
                by_cand.setdefault(s["candidates"][k], []).append(p / m)
    if not pred:
        sys.exit(f"{path}: no measured non-reference candidates (make it with --measure all)")
    err = sorted(abs(p - m) for p, m in zip(pred, meas))
    print(f"{len(pred)} (tensor, candidate) pairs besides the references")
    print(f"Spearman rank correlation of predicted vs measured KL: {pearson(ranks(pred), ranks(meas)):.3f}")
    print(f"Pearson correlation of log KL: {pearson(pred, meas):.3f}")
    print(f"median |predicted/measured - 1|: {math.exp(err[len(err) // 2]) - 1:.1%}")
    for c, r in by_cand.items():
        r = sorted(r)
        print(f"  {c}: median predicted/measured {r[len(r) // 2]:.3f} (n = {len(r)})")


def row(name, fp_ppl, plan, ppl):
    p = json.load(open(ppl))
    dnll = math.log(p["ppl"]) - math.log(fp_ppl)
    if plan is None:
        return f"| {name} | – | {p['bits_per_weight']:.4f} | – | – | **{p['ppl']:.3f}** | {dnll:.4f} | – |"
    a = json.load(open(plan))
    meas = "–" if a["measured_kl"] is None else f"{a['measured_kl']:.4f}"
    return (f"| {name} | {a['target_bits_per_weight']} | {p['bits_per_weight']:.4f} | {a['predicted_kl']:.4f} | {meas} | "
            f"**{p['ppl']:.3f}** | {dnll:.4f} | {100 * (a['predicted_kl'] / dnll - 1):+.0f}% |")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("proxy", "rows", "single"):
        sys.exit(__doc__)
    if sys.argv[1] == "proxy":
        return proxy(sys.argv[2])
    fp = float(sys.argv[2])
    print("| plan | target | bits/weight (linears) | predicted KL | measured KL (calib) | PPL | Δ NLL (eval) | "
          "predicted vs Δ NLL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arg in sys.argv[3:]:
        name, files = arg.split("=", 1)
        if sys.argv[1] == "rows":
            plan, ppl = files.split(":")
            print(row(name, fp, plan, ppl))
        else:
            print(row(name, fp, None, files))


if __name__ == "__main__":
    main()
