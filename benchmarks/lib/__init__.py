"""What the benchmark scripts share; they import it as ``lib`` (their own directory comes first
on ``sys.path`` when run as ``python benchmarks/SCRIPT.py``).

- ``common``: the repository's paths, free ports, starting and stopping servers, CPU and memory
  of a process, log trouble, versions, writing RESULTS.md.
- ``ws_client``: the raw-socket WebSocket client (frames, handshake; websocket_bench's load client).
- ``client_workers``: processes that open and hold thousands of connections (c10k, broadcast).
- ``broadcast``: one message to every member of a room, timed (broadcast_bench, scale_out_bench).
- ``workers``: a ``--workers N`` server's processes, their CPU, which one holds a connection (c100k,
  keepalive_bench).
- ``echo_probe``: a process timing echoes on a few connections beside the load (keepalive_bench).
"""
