"""The PREDICT comparison's Python side.

`job`: what a batch-scoring job does without runbase — fetch the rows with psycopg 3, build
a tensor, run the model (the same TorchScript module runbase serves, exported with
export_model) in chunks under no_grad, pick each row's label. Timed from the query to the
last label.

`floor`: the raw libtorch forward pass alone — the same module over a float32 tensor of the
same shape already in memory, in the same chunks. Nothing faster can score these rows.

Prints one JSON line: {"seconds": ..., "rows": ...}.

usage: predict_job.py job|floor MODEL.pt --conninfo C --table T --features N --rows R
       --threads N --chunk 8192
"""

import argparse
import json
import time

import torch


def forward_in_chunks(module, x, chunk):
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            out.append(module(x[start : start + chunk]).argmax(1))
    return torch.cat(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["job", "floor"])
    p.add_argument("model")
    p.add_argument("--conninfo", default="")
    p.add_argument("--table", default="data")
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--chunk", type=int, default=8192)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    module = torch.jit.load(a.model)
    module.eval()
    # Warm up (first calls of a TorchScript module optimize it).
    forward_in_chunks(module, torch.zeros(a.chunk, a.features), a.chunk)
    if a.mode == "floor":
        x = torch.rand(a.rows, a.features) * 4 - 2
        start = time.perf_counter()
        labels = forward_in_chunks(module, x, a.chunk)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "rows": int(labels.shape[0])}))
        return

    import psycopg

    columns = ", ".join(f"f{k}" for k in range(a.features))
    start = time.perf_counter()
    with psycopg.connect(a.conninfo) as conn:
        rows = conn.execute(f"SELECT id, {columns} FROM {a.table}").fetchall()
    ids = [r[0] for r in rows]
    x = torch.tensor([r[1:] for r in rows], dtype=torch.float32)
    labels = forward_in_chunks(module, x, a.chunk).tolist()
    scored = list(zip(ids, labels))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": len(scored)}))


if __name__ == "__main__":
    main()
