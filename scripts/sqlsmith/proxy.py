#!/usr/bin/env python3
"""A logging PostgreSQL wire proxy for sqlsmith runs (scripts/sqlsmith.sh).

sqlsmith reports how many queries failed, not which or how. This proxy sits between it and
runbase, passes every byte through unchanged, and writes each simple-protocol query with its
outcome to $SQLSMITH_OUT/queries.jsonl: {"q": query, "secs": seconds, "err": the error
response's fields (C: SQLSTATE, M: message) or null}.

Usage: proxy.py LISTEN_PORT UPSTREAM_PORT
"""
import asyncio
import json
import os
import struct
import sys
import time

LISTEN, UPSTREAM = int(sys.argv[1]), int(sys.argv[2])
LOG = open(os.path.join(os.environ.get("SQLSMITH_OUT", "."), "queries.jsonl"), "a")


async def read_message(reader):
    tag = await reader.readexactly(1)
    header = await reader.readexactly(4)
    (length,) = struct.unpack("!I", header)
    return tag, header, await reader.readexactly(length - 4)


async def client_to_server(reader, writer, state):
    # The startup packet has no type byte.
    header = await reader.readexactly(4)
    (length,) = struct.unpack("!I", header)
    writer.write(header + await reader.readexactly(length - 4))
    await writer.drain()
    while True:
        tag, header, body = await read_message(reader)
        if tag == b"Q":
            state["query"] = body[:-1].decode(errors="replace")
            state["start"] = time.time()
            state["errors"] = []
        writer.write(tag + header + body)
        await writer.drain()


async def server_to_client(reader, writer, state):
    while True:
        tag, header, body = await read_message(reader)
        if tag == b"E":
            fields = {}
            for part in body.split(b"\0"):
                if part:
                    fields[chr(part[0])] = part[1:].decode(errors="replace")
            state.setdefault("errors", []).append(fields)
        elif tag == b"Z" and state.get("query") is not None:
            errors = state.get("errors") or [None]
            LOG.write(json.dumps({
                "q": state["query"],
                "secs": round(time.time() - state["start"], 3),
                "err": errors[0],
            }) + "\n")
            LOG.flush()
            state["query"] = None
        writer.write(tag + header + body)
        await writer.drain()


async def handle(client_reader, client_writer):
    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    state = {}
    tasks = [
        asyncio.create_task(client_to_server(client_reader, server_writer, state)),
        asyncio.create_task(server_to_client(server_reader, client_writer, state)),
    ]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for w in (client_writer, server_writer):
        w.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
