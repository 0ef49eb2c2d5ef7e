#!/usr/bin/env python3
"""TCP forwarders from an address containers can reach (the test bridge) to services that
listen on loopback only. Usage: forward.py LISTEN_IP LPORT:HOST:PORT [...]. Prints 'ready'."""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def handler(host, port):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle


async def main():
    listen_ip, specs = sys.argv[1], sys.argv[2:]
    servers = []
    for spec in specs:
        lport, host, port = spec.split(":")
        servers.append(await asyncio.start_server(handler(host, int(port)), listen_ip, int(lport)))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
