"""The TRAIN comparison's Python side: the same training as runbase's TRAIN, written the
usual way in PyTorch.

Reads the CSV (last column the 0/1 label), warms PyTorch up, then — timed — standardizes with training-row
statistics, splits 80/20, and trains an MLP with Adam on shuffled mini-batches, computing
the validation loss and accuracy after every epoch, as TRAIN does. Prints one JSON line:
{"seconds": <timed part>, "val_loss": ..., "accuracy": ...}.

usage: train_loop.py CSV --hidden 128,64 --epochs 20 --batch-size 64 --lr 0.001 --threads N
"""

import argparse
import csv
import json
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--hidden", default="128,64")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with open(a.csv) as f:
        rows = list(csv.reader(f))[1:]
    data = torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float32)

    # One throwaway optimizer step first: PyTorch's first `step()` imports and initializes
    # machinery (about 2 s here) that a long-lived training process pays once. Leaving it
    # out of the timing favours the Python side.
    warm = torch.nn.Linear(2, 2)
    warm_opt = torch.optim.Adam(warm.parameters(), lr=a.lr)
    warm(torch.zeros(1, 2)).sum().backward()
    warm_opt.step()

    start = time.perf_counter()
    x, y = data[:, :-1], data[:, -1].long()
    n = x.shape[0]
    perm = torch.randperm(n)
    n_val = round(n * 0.2)
    val, train = perm[:n_val], perm[n_val:]
    mean = x[train].mean(0)
    std = x[train].std(0, unbiased=False).clamp_min(1e-12)
    x = (x - mean) / std
    xt, yt, xv, yv = x[train], y[train], x[val], y[val]
    widths = [x.shape[1]] + [int(h) for h in a.hidden.split(",")] + [2]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(a.epochs):
        model.train()
        order = torch.randperm(xt.shape[0])
        total = torch.zeros(())
        for i in range(0, xt.shape[0], a.batch_size):
            idx = order[i : i + a.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]
        train_loss = (total / xt.shape[0]).item()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            val_loss = loss_fn(out, yv).item()
            accuracy = (out.argmax(1) == yv).float().mean().item()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "train_loss": train_loss, "val_loss": val_loss, "accuracy": accuracy}))


if __name__ == "__main__":
    main()
