"""Online scoring load: one client, keep-alive, one request at a time.

    scoring_load.py make-model --out DIR [--features F]
        A TorchScript MLP (F → 64 → 64 → 1, regression) saved as DIR/model.pt, and the
        same module saved as an MLflow model (pytorch flavour) in DIR/mlflow_model.
    scoring_load.py load --url URL --features F --batch B --requests N
        POSTs N requests of B rows (MLflow's dataframe_split JSON) to URL, after 20 untimed
        ones; prints {"p50_ms", "p99_ms", "rows_per_s"} as one JSON line.
"""

import argparse
import json
import os
import random
import time


def make_model(args):
    import mlflow
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(args.features, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )
    scripted = torch.jit.script(net.eval())
    os.makedirs(args.out, exist_ok=True)
    pt = os.path.join(args.out, "model.pt")
    scripted.save(pt)
    model_dir = os.path.join(args.out, "mlflow_model")
    mlflow.pytorch.save_model(scripted, model_dir, serialization_format="pickle")
    print(json.dumps({"pt": pt, "mlflow_model": model_dir}))


def load(args):
    import requests

    rng = random.Random(7)
    columns = [f"f{i}" for i in range(args.features)]
    body = json.dumps({
        "dataframe_split": {
            "columns": columns,
            "data": [[rng.random() for _ in columns] for _ in range(args.batch)],
        }
    })
    session = requests.Session()
    headers = {"Content-Type": "application/json"}

    def once():
        r = session.post(args.url, data=body, headers=headers)
        assert r.status_code == 200, r.text[:500]
        n = len(r.json()["predictions"])
        assert n == args.batch, (n, args.batch)

    for _ in range(20):
        once()
    latencies = []
    start = time.perf_counter()
    for _ in range(args.requests):
        t = time.perf_counter()
        once()
        latencies.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(json.dumps({
        "p50_ms": pick(0.5) * 1e3,
        "p99_ms": pick(0.99) * 1e3,
        "rows_per_s": args.batch * args.requests / total,
    }))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["make-model", "load"])
    p.add_argument("--out")
    p.add_argument("--url")
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--requests", type=int, default=1000)
    args = p.parse_args()
    {"make-model": make_model, "load": load}[args.mode](args)


if __name__ == "__main__":
    main()
