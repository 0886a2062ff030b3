#!/usr/bin/env python3
"""Distributed (DDP, gloo, CPU) training on a pinned version of a runbase table,
with metrics logged back to runbase over the PostgreSQL protocol.

Run with torchrun, e.g. two workers on one host:

  torchrun --standalone --nproc_per_node=2 ddp_train.py \\
      --table-uri /path/to/runbase-data/objects/tables/<uuid>/ --version 1 \\
      --dsn "host=127.0.0.1 port=5433 user=runbase dbname=runbase" --run-id <run>

What each worker does:

  1. Reads the table at exactly --version with deltalake.DeltaTable(uri,
     version=V) -- every worker sees the same snapshot no matter what is
     committed meanwhile. Features are --features (comma-separated) or every
     column but the label; the label is --label (default: the last column).
     All must be numeric; rows with a null in them are dropped.
  2. Sorts the rows (by all columns) so the order does not depend on how the
     snapshot's files are listed, then takes its shard rows[rank::world_size].
     Shards are padded (by repeating their first rows) to the same length so
     every rank runs the same number of optimizer steps, as DDP requires.
  3. Trains a linear model (or an MLP with --hidden N) wrapped in
     DistributedDataParallel; gradients are all-reduced by gloo.
  4. Logs per epoch, over its own psycopg connection:
        loss_rank{r}  this rank's mean training loss  (every rank)
        loss          the global mean over all ranks   (rank 0 only)
     with  SELECT log_metric(run_id, key, value, step)  where step = epoch
     (1-based).

Without --run-id, rank 0 starts a run in --experiment (start_run), records the
input table version when --table-name is given (log_input), and ends the run
(end_run) when training succeeds; the run id is broadcast to the other ranks.
A --run-id that is given is only logged to, never ended.

S3 table URIs (s3://bucket/prefix/) use AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
and AWS_REGION from the environment, and --s3-endpoint for an S3-compatible
server.

Exit status 0 on success; any error raises, and torchrun exits non-zero.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import psycopg
import torch
import torch.distributed as dist
from deltalake import DeltaTable
from torch.nn.parallel import DistributedDataParallel as DDP


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table-uri", required=True, help="Delta table location")
    ap.add_argument("--version", type=int, required=True, help="table version to train on")
    ap.add_argument("--dsn", required=True, help="libpq conninfo of the runbase server")
    ap.add_argument("--run-id", help="run to log to (default: rank 0 starts one)")
    ap.add_argument("--experiment", default="ddp-example", help="for a new run")
    ap.add_argument("--table-name", help="runbase table name, for log_input on a new run")
    ap.add_argument("--features", help="comma-separated feature columns (default: all but label)")
    ap.add_argument("--label", help="label column (default: the last column)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--hidden", type=int, default=0, help="MLP hidden width (0: linear)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--s3-endpoint", help="S3-compatible endpoint for s3:// URIs")
    return ap.parse_args()


def storage_options(uri, endpoint):
    """delta-rs object_store options for s3:// URIs; None for local tables."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    opts = {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }
    if endpoint:
        opts.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ALLOW_HTTP="true",
            AWS_VIRTUAL_HOSTED_STYLE_REQUEST="false",
        )
    return opts


def load_shard(args, rank, world):
    """This rank's (features, labels) float32 tensors and the column names."""
    table = DeltaTable(
        args.table_uri,
        version=args.version,
        storage_options=storage_options(args.table_uri, args.s3_endpoint),
    )
    if table.version() != args.version:  # DeltaTable raises first, but be explicit
        raise RuntimeError(f"asked for version {args.version}, got {table.version()}")
    columns = [f.name for f in table.schema().fields]
    label = args.label or columns[-1]
    if args.features:
        features = [c.strip() for c in args.features.split(",") if c.strip()]
    else:
        features = [c for c in columns if c != label]
    for c in features + [label]:
        if c not in columns:
            raise ValueError(f"column {c!r} not in table columns {columns}")

    data = table.to_pyarrow_table(columns=features + [label])
    # float64 matrix, nulls -> NaN; drop rows with any null.
    mat = np.column_stack(
        [data.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in data.column_names]
    ) if data.num_rows else np.zeros((0, len(features) + 1))
    mat = mat[~np.isnan(mat).any(axis=1)]
    # Deterministic order across ranks: sort by all columns (last key first).
    mat = mat[np.lexsort(mat.T[::-1])]
    n = mat.shape[0]
    if n < world:
        raise RuntimeError(f"table version {args.version} has {n} usable rows, fewer than {world} ranks")
    shard = mat[rank::world]
    # Pad to ceil(n / world) rows so all ranks take the same number of steps.
    per_rank = -(-n // world)
    if shard.shape[0] < per_rank:
        shard = np.concatenate([shard, shard[: per_rank - shard.shape[0]]])
    x = torch.from_numpy(shard[:, :-1].astype(np.float32))
    y = torch.from_numpy(shard[:, -1:].astype(np.float32))
    return x, y, features, label, n


def build_model(n_in, hidden):
    if hidden > 0:
        return torch.nn.Sequential(
            torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )
    return torch.nn.Linear(n_in, 1)


def main():
    args = parse_args()
    dist.init_process_group(backend="gloo")  # torchrun sets RANK/WORLD_SIZE/MASTER_*
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)  # tiny model; avoid oversubscribing the CPUs
    t0 = time.monotonic()

    # One connection per rank; autocommit so every log_metric call is its own
    # statement (runbase makes each durable and visible when it returns).
    conn = psycopg.connect(args.dsn, autocommit=True, application_name=f"ddp_train-rank{rank}")

    # The run: given, or started by rank 0 and broadcast to the others.
    started_here = args.run_id is None
    box = [args.run_id]
    if started_here and rank == 0:
        box[0] = conn.execute("SELECT start_run(%s)", (args.experiment,)).fetchone()[0]
    if started_here:
        dist.broadcast_object_list(box, src=0)
    run_id = box[0]

    try:
        train(args, conn, rank, world, run_id, started_here, t0)
    except BaseException:
        if started_here and rank == 0:
            try:  # best effort: do not leave the run RUNNING
                conn.execute("SELECT end_run(%s, 'FAILED')", (run_id,))
            except Exception:
                pass
        raise
    finally:
        conn.close()
    dist.destroy_process_group()
    return 0


def train(args, conn, rank, world, run_id, started_here, t0):
    """Load this rank's shard, train with DDP, log metrics; rank 0 ends a run it started."""
    x, y, features, label, n_rows = load_shard(args, rank, world)
    t_loaded = time.monotonic()
    if rank == 0:
        print(
            f"run_id={run_id} table_version={args.version} rows={n_rows} world_size={world} "
            f"features={features} label={label} load_secs={t_loaded - t0:.2f}",
            flush=True,
        )
        if started_here and args.table_name:
            conn.execute(
                "SELECT log_input(%s, %s, %s)", (run_id, args.table_name, args.version)
            )
        if started_here:
            params = {
                "table_uri": args.table_uri,
                "table_version": args.version,
                "world_size": world,
                "epochs": args.epochs,
                "lr": args.lr,
                "batch_size": args.batch_size,
                "hidden": args.hidden,
            }
            conn.execute("SELECT log_params(%s, %s)", (run_id, json.dumps(params)))

    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP also broadcasts them)
    model = DDP(build_model(len(features), args.hidden))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.MSELoss(reduction="sum")
    gen = torch.Generator().manual_seed(args.seed + rank)

    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        loss_sum = 0.0
        for start in range(0, x.shape[0], args.batch_size):
            idx = perm[start : start + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            (loss / idx.numel()).backward()  # DDP averages these gradients across ranks
            opt.step()
            loss_sum += loss.item()
        local = loss_sum / x.shape[0]
        # Global mean loss over all ranks' rows (sum and count all-reduced).
        tot = torch.tensor([loss_sum, float(x.shape[0])], dtype=torch.float64)
        dist.all_reduce(tot)
        global_loss = (tot[0] / tot[1]).item()

        conn.execute(
            "SELECT log_metric(%s, %s, %s, %s)", (run_id, f"loss_rank{rank}", local, epoch)
        )
        if rank == 0:
            conn.execute("SELECT log_metric(%s, %s, %s, %s)", (run_id, "loss", global_loss, epoch))
            print(f"epoch={epoch} loss={global_loss:.6f}", flush=True)

    # Sanity check: DDP keeps replicas identical; compare a parameter checksum.
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(sums, flat.sum().reshape(1))
    if any(abs(s.item() - sums[0].item()) > 1e-9 for s in sums):
        raise RuntimeError(f"replicas diverged: parameter sums {[s.item() for s in sums]}")

    dist.barrier()  # every rank has logged its last metric
    if rank == 0:
        if started_here:
            conn.execute("SELECT end_run(%s)", (run_id,))
        weights = [round(v, 4) for v in flat.tolist()]
        shown = weights if len(weights) <= 16 else f"<{len(weights)} values>"
        print(
            f"done run_id={run_id} final_loss={global_loss:.6f} params={shown} "
            f"train_secs={time.monotonic() - t_loaded:.2f} secs={time.monotonic() - t0:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
